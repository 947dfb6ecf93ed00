//! Generic build scheduler: cache keys, deduplication, concurrent execution, progress events and the persistent cache index.
