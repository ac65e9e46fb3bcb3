/* The floor of audited opens per second: a minimal seccomp user-notification loop in C.
 *
 * Built by `sandbox bench` at bench time (cc -O2) and run in the same invocation as the
 * project's own audit loop, so the ratio "audited opens/s : this" compares like with like.
 *
 * A child installs a filter that notifies openat(2) (everything else allowed), hands the
 * listener to the parent over a socketpair (SCM_RIGHTS), then opens and closes PATH
 * N times and prints the elapsed seconds of that loop. The parent sets
 * SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (by value, as the project does) and answers every
 * notification with CONTINUE after reading the path argument with process_vm_readv
 * (what any audit must do at least). Nothing else: no decision, no record.
 *
 * usage: notify_floor [OPTION...] N PATH      -> prints "<seconds> <notifications>"
 *        notify_floor [OPTION...] N PATH PROGRAM ARGS...
 *                                  -> the child execs PROGRAM under the filter instead of
 *                                     its own loop (the bench runs the very program it
 *                                     runs in the sandbox: same loop, same language), and
 *                                     PROGRAM prints the seconds itself
 *
 * The options add, one at a time, what the project's audit loop and sandbox add to this
 * floor, so that `python -m sandbox.bench.audit --decompose` can measure each apart
 * (docs/benchmarks-journal.md, "The audit loop"). None is on in the floor `sandbox bench` divides by.
 *   --poll      wait with poll(2) on the listener and an (idle) epoll descriptor before each
 *               RECV, with a timeout, as sandbox/_native/notify_fast.c does for fairness
 *   --readlink  readlinkat(2) of PATH's final name through a kept descriptor of its
 *               directory after the read, as notify_fast.c re-checks a followed name
 *   --filter F  the child installs the classic-BPF program in file F (raw sock_filter
 *               array, e.g. the policy's own) instead of the one-syscall filter; it must
 *               return USER_NOTIF for openat. Every notification is answered CONTINUE.
 *   --killable  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, as the sandbox installs its filter
 *   --landlock  the child restricts itself first with a Landlock domain handling every
 *               file right the kernel knows (as the sandbox's does), granting read and
 *               execute beneath /usr, /lib, /lib64, /bin, /etc, /tmp, /proc, /dev
 *   --landlock-abi1  the same domain handling only ABI 1's rights: without TRUNCATE (which
 *               the kernel's open hook asks for besides READ_FILE, and a read-only rule
 *               never grants) the hook's walk up the path stops at the first rule instead
 *               of going on to the root: what that walk costs
 * The listener reaches the parent by pidfd_getfd (the child writes its number), not
 * SCM_RIGHTS: a policy's filter may notify sendmsg, which nobody would answer yet.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1
#endif

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

static struct {
    int poll, readlink, killable, landlock;
    const char *filter;
} opt;

/* What the sandbox's Landlock layer handles on this kernel (every known file right), with
 * read+execute granted beneath the usual system trees. */
static int landlock_self(void) {
    int abi = (int)syscall(__NR_landlock_create_ruleset, NULL, 0,
                           LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1) { perror("landlock (not available)"); return -1; }
    uint64_t fs = (1ULL << 13) - 1;          /* ABI 1 */
    if (abi >= 2 && opt.landlock == 1) fs |= 1ULL << 13;   /* REFER */
    if (abi >= 3 && opt.landlock == 1) fs |= 1ULL << 14;   /* TRUNCATE */
    if (abi >= 5 && opt.landlock == 1) fs |= 1ULL << 15;   /* IOCTL_DEV */
    struct landlock_ruleset_attr ra = {.handled_access_fs = fs};
    int rs = (int)syscall(__NR_landlock_create_ruleset, &ra, sizeof ra, 0);
    if (rs < 0) { perror("landlock_create_ruleset"); return -1; }
    const char *dirs[] = {"/usr", "/lib", "/lib64", "/bin", "/etc", "/tmp", "/proc", "/dev", NULL};
    for (int i = 0; dirs[i]; i++) {
        struct landlock_path_beneath_attr pb = {
            .allowed_access = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |
                              LANDLOCK_ACCESS_FS_EXECUTE};
        pb.parent_fd = open(dirs[i], O_PATH | O_CLOEXEC);
        if (pb.parent_fd < 0) continue;
        if (syscall(__NR_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0))
            perror("landlock_add_rule");
        close(pb.parent_fd);
    }
    int rc = (int)syscall(__NR_landlock_restrict_self, rs, 0);
    if (rc) perror("landlock_restrict_self");
    close(rs);
    return rc;
}

static int child(int sock, long n, const char *path, char **program) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    static struct sock_filter given[BPF_MAXINSNS];
    if (opt.filter) {
        FILE *fp = fopen(opt.filter, "rb");
        size_t len = fp ? fread(given, sizeof given[0], BPF_MAXINSNS, fp) : 0;
        if (fp) fclose(fp);
        if (!len) { fprintf(stderr, "no BPF program in %s\n", opt.filter); return 1; }
        prog.len = (unsigned short)len;
        prog.filter = given;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("no_new_privs"); return 1; }
    if (opt.landlock && landlock_self()) return 1;
    unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER |
                          (opt.killable ? SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV : 0);
    int lfd = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (lfd < 0) { perror("seccomp"); return 1; }
    /* write(2), not sendmsg: the parent takes the descriptor with pidfd_getfd */
    if (write(sock, &lfd, sizeof lfd) != sizeof lfd) { perror("write"); return 1; }
    char ack;
    if (read(sock, &ack, 1) != 1) return 1;   /* the parent took it and is ready to answer */
    close(lfd);
    if (program) {
        close(sock);
        execv(program[0], program);
        perror("execv");
        return 1;
    }
    for (int i = 0; i < 200; i++) close(open(path, O_RDONLY));
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) { perror("open"); return 1; }
        close(fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    char out[64];
    int len = snprintf(out, sizeof out, "%.9f\n", s);
    if (write(sock, out, len) != len) return 1;
    return 0;
}

/* The child is gone: close the listener from the handler, so a RECV about to block
 * fails with EBADF and one already blocked returns EINTR, then EBADF (no lost wake-up). */
static volatile int listener_fd = -1;
static void on_chld(int sig) { (void)sig; if (listener_fd >= 0) close(listener_fd); }

int main(int argc, char **argv) {
    const char *self = argv[0];
    while (argc > 1 && !strncmp(argv[1], "--", 2)) {
        if (!strcmp(argv[1], "--poll")) opt.poll = 1;
        else if (!strcmp(argv[1], "--readlink")) opt.readlink = 1;
        else if (!strcmp(argv[1], "--killable")) opt.killable = 1;
        else if (!strcmp(argv[1], "--landlock")) opt.landlock = 1;
        else if (!strcmp(argv[1], "--landlock-abi1")) opt.landlock = 2;
        else if (!strcmp(argv[1], "--filter") && argc > 2) { opt.filter = argv[2]; argv++; argc--; }
        else { fprintf(stderr, "unknown option %s\n", argv[1]); return 2; }
        argv++;
        argc--;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s [--poll] [--readlink] [--filter FILE] [--killable] "
                "[--landlock | --landlock-abi1] N PATH [PROGRAM ARGS...]\n", self);
        return 2;
    }
    char **program = argc > 3 ? argv + 3 : NULL;
    long n = atol(argv[1]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) { perror("socketpair"); return 1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;   /* no SA_RESTART: the blocked RECV returns EINTR */
    sigaction(SIGCHLD, &sa, NULL);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) { close(sv[0]); _exit(child(sv[1], n, argv[2], program)); }
    close(sv[1]);
    int child_fd, pidfd, lfd = -1;
    if (read(sv[0], &child_fd, sizeof child_fd) == sizeof child_fd &&
            (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) >= 0)
        lfd = (int)syscall(SYS_pidfd_getfd, pidfd, child_fd, 0);
    if (lfd < 0) { perror("no listener (pidfd_getfd)"); return 1; }
    listener_fd = lfd;
    if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP))
        perror("SYNC_WAKE_UP (continuing without)");
    if (write(sv[0], "g", 1) != 1) return 1;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    char buf[4096];
    long count = 0;
    int epfd = opt.poll ? epoll_create1(EPOLL_CLOEXEC) : -1;
    /* --readlink: PATH's directory kept open, its final name re-read per call */
    const char *slash = strrchr(argv[2], '/');
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", slash && slash != argv[2] ? (int)(slash - argv[2]) : 1,
             slash ? argv[2] : ".");
    int dirfd = opt.readlink ? open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
    const char *name = slash ? slash + 1 : argv[2];
    for (;;) {
        if (opt.poll) {
            struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = epfd, .events = POLLIN}};
            int got = poll(p, 2, 1000);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0 || !(p[0].revents & POLLIN)) break;   /* hung up (or silent) */
        }
        memset(&req, 0, sizeof req);
        if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, &req)) {
            if (errno == EINTR || errno == ENOENT) continue;
            break;
        }
        struct iovec local = {.iov_base = buf, .iov_len = sizeof buf};
        struct iovec remote = {.iov_base = (void *)req.data.args[1], .iov_len = 256};
        process_vm_readv(req.pid, &local, 1, &remote, 1, 0);
        if (dirfd >= 0) {
            char c;
            if (readlinkat(dirfd, name, &c, 1) >= 0) c = 0;
        }
        count++;
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        ioctl(lfd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
    char out[64] = {0};
    ssize_t got = program ? 1 : read(sv[0], out, sizeof out - 1);
    int status;
    waitpid(pid, &status, 0);
    if (program) {   /* the program printed its own seconds */
        fprintf(stderr, "%ld notifications\n", count);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    if (got <= 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "child failed\n");
        return 1;
    }
    out[strcspn(out, "\n")] = 0;
    printf("%s %ld\n", out, count);
    return 0;
}
