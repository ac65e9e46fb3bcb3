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
 * usage: notify_floor N PATH      -> prints "<seconds> <notifications>"
 *        notify_floor N PATH PROGRAM ARGS...
 *                                  -> the child execs PROGRAM under the filter instead of
 *                                     its own loop (the bench runs the very program it
 *                                     runs in the sandbox: same loop, same language), and
 *                                     PROGRAM prints the seconds itself
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int send_fd(int sock, int fd) {
    char dummy = 'x';
    struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
    char ctl[CMSG_SPACE(sizeof(int))];
    memset(ctl, 0, sizeof ctl);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                         .msg_controllen = sizeof ctl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock) {
    char dummy;
    struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
    char ctl[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                         .msg_controllen = sizeof ctl};
    if (recvmsg(sock, &msg, 0) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
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
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("no_new_privs"); return 1; }
    int lfd = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                      &prog);
    if (lfd < 0) { perror("seccomp"); return 1; }
    if (send_fd(sock, lfd)) { perror("send_fd"); return 1; }
    close(lfd);
    char ack;
    if (read(sock, &ack, 1) != 1) return 1;   /* the parent is ready to answer */
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
    if (argc < 3) { fprintf(stderr, "usage: %s N PATH [PROGRAM ARGS...]\n", argv[0]); return 2; }
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
    int lfd = recv_fd(sv[0]);
    if (lfd < 0) { fprintf(stderr, "no listener\n"); return 1; }
    listener_fd = lfd;
    if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP))
        perror("SYNC_WAKE_UP (continuing without)");
    if (write(sv[0], "g", 1) != 1) return 1;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    char buf[4096];
    long count = 0;
    for (;;) {
        memset(&req, 0, sizeof req);
        if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, &req)) {
            if (errno == EINTR || errno == ENOENT) continue;
            break;
        }
        struct iovec local = {.iov_base = buf, .iov_len = sizeof buf};
        struct iovec remote = {.iov_base = (void *)req.data.args[1], .iov_len = 256};
        process_vm_readv(req.pid, &local, 1, &remote, 1, 0);
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
