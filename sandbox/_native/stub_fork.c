/* The stub, compiled: what the zygote's child does before it becomes the waiter
 * (sandbox/monitor/zygote.py; the Python stub, sandbox/sandboxee/stub.py, is the
 * fallback).
 *
 * WHY: the stub was a fork of the warm Python template that, before it exec'd the
 * compiled waiter (`sandbox-init --stub`), decoded its request, joined the run's
 * cgroups, entered the namespaces, wrote its uid/gid maps and user-namespace
 * bounds and forked PID 1, all in Python: 4.0 ms of CPU and 520 page faults a run
 * on this machine, each fault a template page copied and then PID 1's, and a
 * Python action's PID 2's after it; and the zygote's fork of it (a copy of the
 * template's page tables, ~1 ms) and its exec (their teardown) on top
 * (docs/benchmarks-journal.md, "The stub in C").
 *
 * Here the zygote calls `sf_spawn` with the request's raw bytes. They are read on
 * the C stack; the stub is a clone that *shares* the zygote's memory (CLONE_VM:
 * nothing copied, nothing to tear down at its exec) and runs on a stack of its own
 * (`stub_stack`). The stub answers the host first (Forked, with its own pidfd),
 * so the host goes on at once; the zygote waits, touching nothing, until the stub
 * has exec'd or ended (CLONE_VFORK). The stub joins,
 * enters, maps and bounds in C and forks PID 1 (glibc's _Fork: no at-fork handler,
 * the child's cached thread id set), a whole copy of the zygote as it waits in
 * `sf_spawn`. PID 1 jumps back to `sf_spawn`'s frame (`back`) and returns 0 into
 * the Python that called it, as from a fork, and goes on as PID 1 in Python.
 *
 * Only one shape of request is read (the one `protocol.to_datagram(ForkStub)`
 * writes, each path printable ASCII with no escaped character); anything else
 * returns -2 before anything starts, and the caller takes the Python path, which
 * decodes (or refuses) it as it always did. The stub's failures are sent on its
 * status socket as the Python stub sent them (a SetupFailure for the cgroups,
 * StubReady not ok for the namespaces), worded alike, and end it (exit 0).
 *
 * WHY CLONE_VFORK, beyond the wait it gives for free: the stub is in the run's memory
 * cgroup while it shares the zygote's memory. The OOM killer, freeing memory in that
 * cgroup (a policy's tiny limit; PID 1's first pages), chose the stub, whose memory
 * looks the largest there, and killed every process sharing it: the zygote, and
 * with it every stub and sandbox it had forked (tests/test_tiny_memory.py). A task
 * in a vfork is never the OOM killer's choice (oom_badness: in_vfork): PID 1 is, or
 * the allocation fails (fork: ENOMEM, the run's setup error).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fds.h"

#define SF_API 3
#define MAX_PROCS 16        /* ForkStub.cgroup_procs: items=16 */
#define MAX_CHARS 4096      /* ... chars=4096 each */
#define MAX_CAPS 16
#define MSG_MAX 8192

extern pid_t _Fork(void);

/* Set once per zygote (`sf_init`): the waiter, the uid and gid mapped to themselves,
 * and the /proc/sys/user/max_* bounds written in each new user namespace. */
static char init_path[4096];
static unsigned map_uid, map_gid;
static int ncaps;
static char cap_name[MAX_CAPS][64];
static char cap_value[MAX_CAPS][24];

/* One request, read on the C stack of the zygote's call (`parse`). */
struct req {
    int namespaces, network, nprocs;
    const char *proc[MAX_PROCS];
    int len[MAX_PROCS];
};

static int last_namespaces;   /* the last request's, read by its PID 1 (`sf_namespaces`) */

/* The stub shares the zygote's memory (CLONE_VM) on a stack of its own; PID 1, forked by
 * it, goes back to `sf_spawn`'s frame on the zygote's stack (`back`). */
#define STUB_STACK (128 * 1024)
static char stub_stack[STUB_STACK] __attribute__((aligned(64)));
static jmp_buf back;
static sigset_t saved_mask;           /* the zygote's, PID 1's once back */

struct job {
    const struct req *r;
    int status_fd, reply_fd;
    volatile int answered;   /* set by the stub once the host has its answer */
};

int sf_api(void) { return SF_API; }

/* In PID 1 forked by `sf_spawn`: whether its stub entered the namespaces. */
int sf_namespaces(void) { return last_namespaces; }

/* `caps`: "name\0value\0" pairs, `n` of them. Returns 0, or -1 when one does not fit. */
int sf_init(const char *waiter, unsigned uid, unsigned gid, const char *caps, int n)
{
    if (strlen(waiter) >= sizeof init_path || n < 0 || n > MAX_CAPS)
        return -1;
    for (int i = 0; i < n; i++) {
        size_t a = strlen(caps), b = strlen(caps + a + 1);
        if (a >= sizeof cap_name[0] || b >= sizeof cap_value[0])
            return -1;
        memcpy(cap_name[i], caps, a + 1);
        memcpy(cap_value[i], caps + a + 1, b + 1);
        caps += a + b + 2;
    }
    strcpy(init_path, waiter);
    map_uid = uid;
    map_gid = gid;
    ncaps = n;
    return 0;
}

static int take(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

static int boolean(const char **p, const char *end, int *out)
{
    if (take(p, end, "true"))
        return *out = 1;
    if (take(p, end, "false"))
        return (*out = 0) == 0;
    return 0;
}

/* The exact shape protocol.to_datagram(ForkStub(...)) writes; 0 for anything else. */
static int parse(const char *p, size_t size, struct req *r)
{
    const char *end = p + size;
    r->nprocs = 0;
    if (!take(&p, end, "{\"type\":\"fork_stub\",\"payload\":{\"namespaces\":")
        || !boolean(&p, end, &r->namespaces) || !take(&p, end, ",\"network\":")
        || !boolean(&p, end, &r->network) || !take(&p, end, ",\"cgroup_procs\":["))
        return 0;
    if (p < end && *p != ']') {
        for (;;) {
            const char *s;
            if (p >= end || *p != '"')
                return 0;
            s = ++p;
            while (p < end && *p != '"') {
                if (*p == '\\' || (unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                    return 0;   /* an escape, a control or non-ASCII byte: Python's */
                p++;
            }
            if (p >= end || p == s || p - s > MAX_CHARS || r->nprocs == MAX_PROCS)
                return 0;
            r->proc[r->nprocs] = s;
            r->len[r->nprocs++] = (int)(p - s);
            p++;
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            break;
        }
    }
    return take(&p, end, "]}}") && p == end;
}

/* For the tests (tests/test_stub_fork.py): `data` read as `sf_spawn` reads it, into
 * `out` as two bytes (namespaces, network: '0' or '1') and each path NUL-terminated.
 * Returns the bytes written, or -1 when `sf_spawn` would not read it. */
int sf_read(const char *data, size_t size, char *out, size_t room)
{
    struct req r;
    size_t k = 2;
    if (!parse(data, size, &r) || room < 2)
        return -1;
    out[0] = (char)('0' + r.namespaces);
    out[1] = (char)('0' + r.network);
    for (int i = 0; i < r.nprocs; i++) {
        if (k + (size_t)r.len[i] + 1 > room)
            return -1;
        memcpy(out + k, r.proc[i], (size_t)r.len[i]);
        k += (size_t)r.len[i];
        out[k++] = '\0';
    }
    return (int)k;
}

/* `s` into `out` as the inside of a JSON string. */
static size_t escape(char *out, size_t room, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 7 < room; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, room - k, "\\u%04x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k] = '\0';
    return k;
}

static const char *why(int err)
{
    const char *d = strerrordesc_np(err);
    return d ? d : "Unknown error";
}

/* A message on the status socket, then the stub ends (the monitor reads it). */
static void last_word(int status_fd, const char *type, const char *layer, const char *text)
{
    char msg[2 * MSG_MAX], esc[MSG_MAX];
    int n;
    escape(esc, sizeof esc, text, strlen(text));
    if (strcmp(type, "stub_ready") == 0)
        n = snprintf(msg, sizeof msg, "{\"type\":\"stub_ready\",\"payload\":{\"ok\":false,"
                     "\"why\":\"%.1000s\",\"layer\":\"%s\",\"pid1\":0}}", esc, layer);
    else
        n = snprintf(msg, sizeof msg, "{\"type\":\"setup_error\",\"payload\":{\"layer\":"
                     "\"%s\",\"message\":\"%s\"}}", layer, esc);
    if (n > 0 && n < (int)sizeof msg)
        send(status_fd, msg, (size_t)n, MSG_NOSIGNAL);
    _exit(0);
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), err;
    ssize_t n;
    if (fd < 0)
        return errno;
    n = write(fd, text, strlen(text));
    err = n < 0 ? errno : 0;
    close(fd);
    return err;
}

/* The stub's answer to the host, as protocol.forked_datagram(pid) writes it, with the
 * stub's pidfd beside it. */
static int answer(int reply_fd, pid_t pid, int pidfd)
{
    char buf[96], ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov;
    struct msghdr msg;
    struct cmsghdr *c;
    int n = snprintf(buf, sizeof buf, "{\"type\":\"forked\",\"payload\":{\"pid\":%d}}",
                     (int)pid);
    memset(&msg, 0, sizeof msg);
    memset(ctl, 0, sizeof ctl);
    iov.iov_base = buf;
    iov.iov_len = (size_t)n;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
    return sendmsg(reply_fd, &msg, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* The stub, on its own stack in the zygote's memory: answer the host, join, enter, map,
 * bound, fork PID 1 (which goes back to `sf_spawn`), say StubReady and become the
 * waiter. Never returns. */
static int stub(void *arg)
{
    struct job *job = arg;
    const struct req *r = job->r;
    int status_fd = job->status_fd;
    const sigset_t *mask = &saved_mask;
    char text[MSG_MAX], path[MAX_CHARS + 1], me[24];
    int err;
    pid_t pid1;

    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    {   /* the host's answer, before any work: it goes on with the run meanwhile */
        pid_t self = getpid();
        int pidfd = (int)syscall(SYS_pidfd_open, self, 0);
        if (pidfd < 0 || answer(job->reply_fd, self, pidfd) < 0)
            _exit(1);    /* the zygote tells the host it was refused */
        close(pidfd);
        job->answered = 1;
        snprintf(me, sizeof me, "%d", (int)self);
    }
    for (int i = 0; i < r->nprocs; i++) {   /* before unshare: named in the host's view */
        memcpy(path, r->proc[i], (size_t)r->len[i]);
        path[r->len[i]] = '\0';
        if ((err = write_file(path, me)) != 0) {
            char *slash = strrchr(path, '/');
            if (slash != NULL && slash != path)
                *slash = '\0';
            snprintf(text, sizeof text, "cannot move pid %s into %s: %s", me, path, why(err));
            last_word(status_fd, "setup_error", "cgroups", text);
        }
    }
    if (r->namespaces) {
        int flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
                    | CLONE_NEWCGROUP | (r->network ? CLONE_NEWNET : 0);
        char map[64];
        if (unshare(flags) < 0) {
            snprintf(text, sizeof text, "cannot create namespaces (%s); user namespaces may "
                     "be disabled (see `sandbox doctor`), or set best_effort = true",
                     why(errno));
            last_word(status_fd, "stub_ready", "user_namespace", text);
        }
        /* setgroups first, or an unprivileged process may not write its gid_map
         * (CVE-2014-8989: dropping groups that guard files) */
        err = write_file("/proc/self/setgroups", "deny");
        if (!err) {
            snprintf(map, sizeof map, "%u %u 1\n", map_uid, map_uid);
            err = write_file("/proc/self/uid_map", map);
        }
        if (!err) {
            snprintf(map, sizeof map, "%u %u 1\n", map_gid, map_gid);
            err = write_file("/proc/self/gid_map", map);
        }
        if (err) {
            snprintf(text, sizeof text, "cannot write the uid/gid map: [Errno %d] %s", err,
                     why(err));
            last_word(status_fd, "stub_ready", "user_namespace", text);
        }
        for (int i = 0; i < ncaps; i++) {
            snprintf(path, sizeof path, "/proc/sys/user/%s", cap_name[i]);
            if ((err = write_file(path, cap_value[i])) != 0) {
                snprintf(text, sizeof text, "cannot bound %s to %s in the sandbox's user "
                         "namespace (%s)", path, cap_value[i], why(err));
                last_word(status_fd, "stub_ready", "user_ns_limits", text);
            }
        }
    }
    /* the run's subreaper: without a PID namespace an orphan of the program re-parents
     * here (the waiter reaps it), not to the monitor */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    pid1 = _Fork();
    if (pid1 == 0) {   /* PID 1: a whole copy of the zygote, as it waits in sf_spawn */
        sigprocmask(SIG_SETMASK, mask, NULL);
        longjmp(back, 1);
    }
    if (pid1 < 0) {
        snprintf(text, sizeof text, "OSError: [Errno %d] %s", errno, why(errno));
        last_word(status_fd, "setup_error", "stub", text);
    }
    snprintf(text, sizeof text, "{\"type\":\"stub_ready\",\"payload\":{\"ok\":true,"
             "\"why\":\"\",\"layer\":\"\",\"pid1\":%d}}", (int)pid1);
    send(status_fd, text, strlen(text), MSG_NOSIGNAL);
    /* the waiter holds its status socket and nothing else, 0-2 included; the zygote
     * runs again once this process has left its memory (the exec ends the vfork) */
    close_except(status_fd, status_fd);
    fcntl(status_fd, F_SETFD, 0);
    {
        char fd_arg[24], pid_arg[24];
        char *argv[] = {"sandbox-stub", "--stub", fd_arg, pid_arg, NULL};
        snprintf(fd_arg, sizeof fd_arg, "%d", status_fd);
        snprintf(pid_arg, sizeof pid_arg, "%d", (int)pid1);
        sigprocmask(SIG_SETMASK, mask, NULL);
        execv(init_path, argv);
    }
    /* no waiter: nothing would report PID 1's end; the run fails (its status closes) */
    kill(pid1, SIGKILL);
    _exit(1);
}

/* In the zygote: start the stub for the request `data` (its status socket `status_fd`),
 * which answers the host on `reply_fd` with its pid and pidfd (`*pidfd` is another
 * pidfd, the zygote's to keep). The stub is a clone sharing this process's memory (no
 * copy of its page tables, nothing to unmap at its exec): until it has forked PID 1 (a
 * copy of this memory as it is now) and exec'd, this process waits here, touching nothing.
 * Returns the stub's pid (`*pidfd` -1 when none could be made), 0 in PID 1 (back from
 * the stub's fork, in the run's namespaces and cgroups), -1 with errno when nothing
 * was started (the caller answers), -2 when the request is not the one shape read
 * here (nothing started), -3 when the stub ended before it could answer the host
 * (the host was told it was refused; the stub is reaped as an orphan). */
pid_t sf_spawn(const char *data, size_t size, int status_fd, int reply_fd, int *pidfd)
{
    static struct req r;    /* read by the stub in this memory */
    static struct job job;
    sigset_t all;
    pid_t pid;

    if (init_path[0] == '\0' || !parse(data, size, &r))
        return -2;
    last_namespaces = r.namespaces;
    job.r = &r;
    job.status_fd = status_fd;
    job.reply_fd = reply_fd;
    job.answered = 0;
    /* no signal handler of the zygote's runs in the stub's C code, nor here meanwhile */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &saved_mask);
    if (setjmp(back) != 0) {
        /* PID 1 (the stub's fork restored its mask). Its copy of the stub's stack is
         * dropped: the next stub's writes would leave those pages PID 1's own, then
         * its Python action's */
        madvise(stub_stack, sizeof stub_stack, MADV_DONTNEED);
        return 0;
    }
    /* back once the stub has exec'd the waiter or ended: until then it runs in this
     * memory, and the OOM killer never chooses it (see the WHY above) */
    pid = clone(stub, stub_stack + sizeof stub_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &job);
    if (pid < 0) {
        int err = errno;
        sigprocmask(SIG_SETMASK, &saved_mask, NULL);
        errno = err;
        return -1;
    }
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
    if (!job.answered) {
        static const char no[] = "{\"type\":\"refused\",\"payload\":{\"error\":"
                                 "\"fork: no pidfd for the stub\"}}";
        send(reply_fd, no, sizeof no - 1, MSG_NOSIGNAL);
        *pidfd = -1;
        return -3;    /* the stub ended: reaped as an orphan */
    }
    /* the zygote's own, to see it end (not yet reaped: never a recycled pid); -1
     * only when out of descriptors, and then it is reaped as an orphan */
    *pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    return pid;
}
