/* A static probe for rbuild's sandbox attack tests. Each subcommand tries something a RUN step
 * must not be able to do (or must still be able to do) and prints `name=ok` or `name=ERRNO`.
 * It only ever touches what the test set up for it: its own keys, its own packets, a marker.
 *
 *   probe syscalls             denied syscalls (keys, namespaces, mount, bpf, perf, ...)
 *   probe addkey DESC          add a "user" key with payload DESC to the user keyring (host side)
 *   probe readkey DESC         look DESC up in the user and session keyrings and read it
 *   probe sniff SECS MARKER    capture packets on every interface for SECS seconds with an
 *                              AF_PACKET socket; prints marker-seen=yes|no
 *   probe chroot-escape PATH   the classic chroot break-out; prints escape-sees-PATH=yes|no
 *   probe ids                  prints uid=N euid=N (a setuid copy shows whether setuid works)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long r) {
    if (r < 0)
        printf("%s=%s\n", name, strerrorname_np(errno));
    else
        printf("%s=ok\n", name);
    fflush(stdout);
}

static int syscalls(void) {
    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
    report("add_key", syscall(SYS_add_key, "user", "rbuild-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    report("request_key", syscall(SYS_request_key, "user", "rbuild-probe", NULL, 0));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_net", unshare(CLONE_NEWNET));
    report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("getpid", syscall(SYS_getpid));
    return 0;
}

static int addkey(const char *desc) {
    long r = syscall(SYS_add_key, "user", desc, desc, strlen(desc), KEY_SPEC_USER_KEYRING);
    report("addkey", r);
    return r < 0;
}

static int readkey(const char *desc) {
    char buf[256];
    long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0);
    report("search_user", id);
    if (id < 0)
        id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", desc, 0);
    if (id >= 0) {
        long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof buf - 1);
        report("read", n);
        if (n > 0) {
            buf[n < (long)sizeof buf - 1 ? n : (long)sizeof buf - 1] = 0;
            printf("key-payload=%s\n", buf);
        }
    }
    return 0;
}

static int sniff(int secs, const char *marker) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    report("packet_socket", s);
    if (s < 0)
        return 0;
    struct timeval tv = {0, 200000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    time_t end = time(NULL) + secs;
    static char buf[70000];
    int seen = 0;
    long packets = 0;
    size_t mlen = strlen(marker);
    while (time(NULL) < end && !seen) {
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n <= 0)
            continue;
        packets++;
        if (memmem(buf, n, marker, mlen))
            seen = 1;
    }
    printf("packets=%ld\nmarker-seen=%s\n", packets, seen ? "yes" : "no");
    return 0;
}

static int chroot_escape(const char *path) {
    mkdir("/tmp/jail", 0755);
    int fd = open("/", O_RDONLY | O_DIRECTORY);
    report("chroot", chroot("/tmp/jail"));
    if (fd >= 0 && fchdir(fd) == 0) {
        for (int i = 0; i < 64; i++)
            if (chdir("..") != 0)
                break;
        report("chroot_dot", chroot("."));
    }
    printf("escape-sees-path=%s\n", access(path, F_OK) == 0 ? "yes" : "no");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "syscalls"))
        return syscalls();
    if (argc >= 3 && !strcmp(argv[1], "addkey"))
        return addkey(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "readkey"))
        return readkey(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "sniff"))
        return sniff(atoi(argv[2]), argv[3]);
    if (argc >= 2 && !strcmp(argv[1], "ids")) {
        printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "chroot-escape"))
        return chroot_escape(argv[2]);
    fprintf(stderr, "usage: probe syscalls|addkey D|readkey D|sniff SECS MARKER|chroot-escape PATH|ids\n");
    return 2;
}
