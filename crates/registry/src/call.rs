//! The description of one registry request that the transport sends and the status mapping
//! reads (its own module so that `transport` and `status` do not import each other).

use crate::Reference;

/// What [`RegistryClient::execute`](crate::RegistryClient) needs to know about one request.
pub(crate) struct Call<'a> {
    /// The repository (and registry) the request is for.
    pub r: &'a Reference,
    /// Token scopes, e.g. `repository:app:pull,push`.
    pub scopes: Vec<String>,
    /// For messages.
    pub what: String,
    /// The request may be sent again (no body, or a body that is re-created per attempt).
    pub replayable: bool,
    /// 401/403 mean "push access denied" rather than "pull access denied".
    pub push: bool,
    /// A blob upload with a large body: sent without the stall timeout (see [`Inner`](crate::client::Inner)).
    pub upload: bool,
}
