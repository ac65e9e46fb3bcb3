/*
 * sandbox-init: PID 1 of every sandbox, under the whole containment sequence.
 *
 * The sandboxee (Python) applies every layer, forks the program's process
 * (which becomes PID 2) and then replaces itself with this binary through
 * execveat(fd, "", AT_EMPTY_PATH): the binary was opened before the mount
 * view existed, so it never has to be in the policy's view, and it is linked
 * statically, so it needs no library from the view either.
 *
 *     sandbox-init STATUS_FD CHILD_PID
 *
 * It does what the kernel expects of an init and nothing else:
 *   - reaps every process re-parented to it (orphans), so zombies never fill
 *     a small process limit;
 *   - forwards the signals it receives (the monitor relays the caller's) to
 *     CHILD_PID (SIGINT, SIGQUIT, SIGHUP, and SIGTSTP, SIGCONT, SIGTTIN, SIGTTOU to
 *     its process group, as a terminal sends ^C, ^\\, a hangup and ^Z, and `fg`): the init of a PID namespace ignores a signal it has no
 *     handler for; the program, as PID 2, has ordinary signal semantics;
 *   - when CHILD_PID ends, writes its raw wait status on STATUS_FD (a
 *     non-blocking pipe the monitor reads: an init's own exit code cannot say
 *     "killed by signal N") as one message of sandbox/protocol/,
 *     ProgramExited: {"type":"program_exit","payload":{"status":N}}, and exits
 *     with the shell's convention (the code, or 128+N). The kernel then kills
 *     whatever is left in the namespace.
 *
 * An exec'd program's PID 1 replaces itself with this binary at once, before any
 * program exists (`sandbox-init --exec STATUS_FD SETUP_FD TTY HEAD TAIL PATH ARGV...`,
 * TTY being "T,IGNORED,BLOCKED[,CLOSED]": 0 or 1, then two hexadecimal signal sets, bit
 * N-1 for signal N, of the caller's, which PID 2 inherits as a direct exec would, then
 * bit N for each of 0, 1, 2 the caller had closed, which PID 2 closes before its exec
 * (a direct run's `cat <&-` fails with EBADF: sandbox/std_fds.py);
 * its environment the program's), and the init forks PID 2 itself: a fork of the
 * small init, not of the sandboxee's Python (a copy of its ~25 MiB of page tables,
 * then that copy's Python up to the exec: ~4-5 ms of CPU per run). PID 2 gets the
 * caller's signal state (what it ignored stays ignored, what it blocked stays blocked,
 * every other disposition default: SIG_IGN and the mask survive an execve) and a process
 * group of its own in the init's session; with TTY 1 the init's session takes the pty as
 * its controlling terminal and PID 2's group is its foreground one, so the pty's ^Z
 * stops PID 2 and the init reports it (ProgramStopped, on SETUP_FD, which the init then
 * keeps) for the caller's job to stop too. Then PID 2 execs
 * PATH (the sandboxee searched PATH already). If the exec fails, it sends the
 * sandboxee's ExecError message, encoded in Python as HEAD, the errno, TAIL, on
 * SETUP_FD and exits 127 (not found) or 126.
 *
 * The same binary is also the waiting half of the stub (`sandbox-init --stub
 * STATUS_FD PID1`): the stub (Python) enters the namespaces, becomes a child
 * subreaper and forks PID 1, then replaces itself with this mode, which
 *   - waits for PID 1 and, meanwhile, reaps any orphan re-parented to it (there
 *     are some only without a PID namespace, in best_effort on a machine
 *     without user namespaces: a double-forked setsid() daemon of the program);
 *   - once PID 1 ended, kills and reaps every descendant left (none with a PID
 *     namespace: the kernel killed them with PID 1), so nothing of the run
 *     outlives its report, whoever the monitor's parent is;
 *   - sends PID 1's raw wait status and the run's resource usage (wait4 of
 *     PID 1, which reaped the whole tree, plus every orphan reaped here) on
 *     STATUS_FD (the stub's SOCK_SEQPACKET status socket) as the one message of
 *     sandbox/protocol/ it ever sends, Pid1Exited. So the monitor needs no
 *     process-wide figure (RUSAGE_CHILDREN) nor a walk of its own descendants,
 *     and a live sandbox costs no Python interpreter between the monitor and
 *     PID 1 (issue 14).
 *
 * It holds nothing worth taking: no descriptor but STATUS_FD (on which the
 * program could only claim a status it can produce anyway by exiting or
 * killing itself) and, with a pty, SETUP_FD (on which it says only that PID 2
 * stopped, which the program can cause anyway), and it makes itself
 * non-dumpable first, so even a policy that allows ptrace or pidfd_getfd
 * cannot reach its memory or descriptors.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "fds.h"

extern char **environ;

/* Bytes: the largest message written (both fit: tests/test_stub_reaper.py). */
#define MSG_MAX 256
/* Processes signalled per pass of kill_tree; the passes repeat until none is left. */
#define TREE_MAX 4096

static int parse(const char *s)
{
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < 0 || v > 1 << 30)
        return -1;
    return (int)v;
}

/* Signal sets and dispositions through the system calls themselves: musl's sigfillset,
 * sigaddset and sigaction leave out signals 32-34 (its own), so a caller's SIGRTMIN (34
 * to the kernel and to glibc programs) was neither blocked nor waited for here, and an
 * init drops an unhandled signal: the program never got it. */
typedef unsigned long long ksigset;   /* the kernel's: bit N-1 for signal N */
struct ksigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    ksigset mask;
};

static void kmask(ksigset set)
{
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &set, NULL, sizeof set);
}

static void kdisposition(int sig, void (*handler)(int))
{
    struct ksigaction sa = {handler, 0, NULL, 0};
    syscall(SYS_rt_sigaction, sig, &sa, NULL, sizeof(ksigset));
}

static int parse_set(const char *s, ksigset *out)
{
    char *end;
    errno = 0;
    *out = strtoull(s, &end, 16);
    return errno || end == s ? -1 : 0;
}

static void report(int fd, int status)
{
    char buf[MSG_MAX];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"program_exit\",\"payload\":{\"status\":%d}}",
                     status);
    if (n > 0 && n < (int)sizeof buf && write(fd, buf, (size_t)n) < 0) {
        /* the monitor falls back to our exit code */
    }
    close(fd);
}

/* PID 2 stopped (^Z at its pty, or a stop signal): said on the setup socket, for the
 * monitor to stop the caller's job too (supervisor.py). Never waits: a report the
 * socket has no room for is dropped (the caller's side then stays running). */
static void report_stop(int fd, int sig)
{
    char buf[MSG_MAX];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"program_stopped\",\"payload\":"
                     "{\"signal\":%d}}", sig);
    if (fd >= 0 && n > 0 && n < (int)sizeof buf)
        (void)send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static int shell_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/* -- the stub's waiting half ------------------------------------------------ */

struct usage {
    long long utime_us, stime_us, max_rss_kib;
};

static void add_usage(struct usage *u, const struct rusage *ru)
{
    u->utime_us += (long long)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec;
    u->stime_us += (long long)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec;
    if (ru->ru_maxrss > u->max_rss_kib)
        u->max_rss_kib = ru->ru_maxrss;
}

static ssize_t read_file(const char *path, char *buf, size_t size)
{
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

/* The pid a pidfd names: its number while the process is unreaped, -1 after. */
static long pidfd_pid(int pidfd)
{
    char path[64], buf[1024], *p;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    if (read_file(path, buf, sizeof buf) <= 0 || (p = strstr(buf, "\nPid:")) == NULL)
        return -1;
    return strtol(p + 5, NULL, 10);
}

static long parent_of(pid_t pid)
{
    char path[64], buf[1024], *p;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_file(path, buf, sizeof buf) <= 0 || (p = strrchr(buf, ')')) == NULL
        || p[1] != ' ' || p[2] == '\0' || p[3] != ' ')
        return -1;
    return strtol(p + 4, NULL, 10);   /* "pid (comm) S ppid ...": comm may hold ')' */
}

/* SIGKILL every descendant of this process, each through a pidfd proved to name it:
 * a number read from /proc may be reaped and reused before it is signalled. A child
 * found under parent P is signalled only if, with its pidfd open, /proc says its
 * parent is P, and afterwards both its pidfd and P's still hold their numbers (so
 * neither was reaped and replaced meanwhile). Breadth first, TREE_MAX at most per
 * pass; what a pass misses (forked meanwhile, re-parented, past TREE_MAX) the caller's
 * next pass finds. */
static void kill_tree(void)
{
    static pid_t pids[TREE_MAX];
    static int fds[TREE_MAX];
    int n = 1;
    pids[0] = getpid();
    fds[0] = -1;
    for (int i = 0; i < n; i++) {
        char path[64], buf[8192];
        DIR *tasks;
        struct dirent *t;
        snprintf(path, sizeof path, "/proc/%d/task", (int)pids[i]);
        if ((tasks = opendir(path)) == NULL)
            continue;
        while ((t = readdir(tasks)) != NULL && n < TREE_MAX) {
            char *p, *end;
            if (t->d_name[0] < '0' || t->d_name[0] > '9')
                continue;
            snprintf(path, sizeof path, "/proc/%d/task/%.16s/children", (int)pids[i],
                     t->d_name);
            if (read_file(path, buf, sizeof buf) <= 0)
                continue;
            for (p = buf; n < TREE_MAX; p = end) {
                long c = strtol(p, &end, 10);
                int fd;
                if (end == p || c <= 0)
                    break;
                fd = (int)syscall(SYS_pidfd_open, (pid_t)c, 0);
                if (fd < 0)
                    continue;
                if (parent_of((pid_t)c) != pids[i] || pidfd_pid(fd) != c
                    || (fds[i] >= 0 && pidfd_pid(fds[i]) != pids[i])) {
                    close(fd);
                    continue;
                }
                syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
                pids[n] = (pid_t)c;
                fds[n++] = fd;
            }
        }
        closedir(tasks);
    }
    for (int i = 1; i < n; i++)
        close(fds[i]);
}

/* PID 1's raw status and the run's usage as a Pid1Exited message, then exit. */
static int stub(int status_fd, pid_t pid1)
{
    char buf[MSG_MAX];
    struct usage u = {0, 0, 0};
    struct rusage ru;
    int st = 0, pid1_status = 0, n;
    pid_t got;

    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);   /* dies with the monitor, as before the exec */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);   /* the Python stub set it before the fork */
    for (;;) {   /* PID 1, and meanwhile any orphan re-parented here */
        got = wait4(-1, &st, 0, &ru);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return 1;   /* no status: the monitor sees the socket close and reports none */
        add_usage(&u, &ru);
        if (got == pid1) {
            pid1_status = st;
            break;
        }
    }
    for (;;) {   /* what is left of the run (nothing, with a PID namespace) */
        got = wait4(-1, &st, WNOHANG, &ru);
        if (got > 0) {
            add_usage(&u, &ru);
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;   /* ECHILD: no child, hence no descendant, is left */
        kill_tree();
        got = wait4(-1, &st, 0, &ru);
        if (got > 0)
            add_usage(&u, &ru);
    }
    n = snprintf(buf, sizeof buf, "{\"type\":\"pid1_exit\",\"payload\":{\"status\":%d,"
                 "\"utime_us\":%lld,\"stime_us\":%lld,\"max_rss_kib\":%lld}}",
                 pid1_status, u.utime_us, u.stime_us, u.max_rss_kib);
    if (n > 0 && n < (int)sizeof buf && write(status_fd, buf, (size_t)n) < 0)
        return 1;
    return 0;
}

/* -- an exec'd program's PID 2 ---------------------------------------------- */

/* The program's process, forked here (file comment); returns its pid, or -1 with errno
 * when the fork failed. The signal dispositions are all default already (main). */
static pid_t start_program(int status_fd, int setup_fd, int tty, ksigset ignored,
                           ksigset blocked, ksigset closed, const char *head, const char *tail,
                           const char *path, char **argv)
{
    size_t size;
    char *buf;
    int err, n;
    /* fork(2) itself: glibc's fork() would link its at-fork handler table into every
     * init's writable pages (this process runs no thread and no handler) */
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);

    if (pid != 0)
        return pid;
    close(status_fd);
    fcntl(setup_fd, F_SETFD, FD_CLOEXEC);   /* open only for a failed exec's report */
    for (int sig = 1; sig <= 64; sig++)
        if (ignored >> (sig - 1) & 1 && sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD)
            kdisposition(sig, SIG_IGN);
    /* PID 2 leads a process group in the init's session: a group whose parent is in
     * another group of its session is not orphaned, so a SIGTSTP stops it, as a direct
     * run's (the kernel ignores SIGTSTP, SIGTTIN and SIGTTOU of default action in an
     * orphaned group): a relayed one without a pty, or the pty's own ^Z with one, where
     * the init holds the pty as its session's terminal (main) and PID 2's group is made
     * its foreground (every signal is still blocked here, SIGTTOU too, so the init's
     * background child may set it). */
    if (setpgid(0, 0) < 0 || (tty && ioctl(0, TIOCSPGRP, &(pid_t){getpid()}) < 0))
        _exit(125);
    kmask(blocked & ~((1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1))));
    for (int fd = 0; fd < 3; fd++)
        if (closed >> fd & 1 && fd != setup_fd)
            close(fd);
    execve(path, argv, environ);
    err = errno;
    /* mmap, not malloc: the allocator's state would be more of every init's pages */
    size = strlen(head) + strlen(tail) + 16;
    buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf != MAP_FAILED && (n = snprintf(buf, size, "%s%d%s", head, err, tail)) > 0
        && (size_t)n < size)
        send(setup_fd, buf, (size_t)n, MSG_NOSIGNAL);
    _exit(err == ENOENT || err == ENOTDIR ? 127 : 126);
}

/* A SetupFailure of the init's own, with the errno's number (strerror would link
 * glibc's message tables and their buffers into every init's writable pages). */
static void setup_failure(int setup_fd, const char *what, int err)
{
    char buf[MSG_MAX];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"setup_error\",\"payload\":"
                     "{\"layer\":\"init\",\"message\":\"%s failed (errno %d)\"}}", what, err);
    if (n > 0 && n < (int)sizeof buf)
        send(setup_fd, buf, (size_t)n, MSG_NOSIGNAL);
}

int main(int argc, char **argv)
{
    ksigset all = ~0ULL, ignored = 0, blocked = 0, closed = 0;
    char *sets = NULL;
    int status_fd, child = 0, setup_fd = -1, tty = 0, stop_said = 0;
    int exec_mode = argc >= 9 && strcmp(argv[1], "--exec") == 0;

    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (argc == 4 && strcmp(argv[1], "--stub") == 0) {
        status_fd = parse(argv[2]);
        child = parse(argv[3]);
        if (status_fd < 0 || child <= 0)
            return 125;
        return stub(status_fd, child);
    }
    if (exec_mode) {
        status_fd = parse(argv[2]);
        setup_fd = parse(argv[3]);
        if (status_fd < 0 || setup_fd < 0 || (argv[4][0] != '0' && argv[4][0] != '1')
            || argv[4][1] != ',' || parse_set(argv[4] + 2, &ignored) < 0
            || (sets = strchr(argv[4] + 2, ',')) == NULL || parse_set(sets + 1, &blocked) < 0
            || ((sets = strchr(sets + 1, ',')) != NULL && parse_set(sets + 1, &closed) < 0))
            return 125;
    } else if (argc == 3) {
        status_fd = parse(argv[1]);
        child = parse(argv[2]);
        if (status_fd < 0 || child <= 0)
            return 125;
    } else {
        return 125;
    }
    /* Every signal blocked and taken with sigwaitinfo: a blocked signal is
     * queued even for a namespace's init, an unhandled one would be dropped.
     * The sandboxee exec'd us with everything blocked already, so a SIGCHLD
     * of a program that ended early is pending, not lost. */
    kmask(all);
    for (int sig = 1; sig <= 64; sig++)   /* an inherited SIG_IGN must not drop a signal */
        if (sig != SIGKILL && sig != SIGSTOP)
            kdisposition(sig, SIG_DFL);
    tty = exec_mode && argv[4][0] == '1';
    /* With a pty, the init's session (PID 1's own: the sandboxee's setsid) takes it as
     * its controlling terminal, and PID 2's group is its foreground (start_program). */
    if (tty && ioctl(0, TIOCSCTTY, 0) < 0) {
        setup_failure(setup_fd, "TIOCSCTTY", errno);
        return 125;
    }
    if (exec_mode) {
        child = start_program(status_fd, setup_fd, tty, ignored, blocked,
                              closed, argv[5], argv[6], argv[7], &argv[8]);
        if (child < 0) {
            setup_failure(setup_fd, "fork", errno);
            return 125;
        }
        /* The init holds nothing but its status pipe (and, with a pty, the setup
         * socket, for report_stop): not the program's stdio nor its IPC socket. */
        close_except(status_fd, tty ? setup_fd : status_fd);
    }
    for (;;) {
        siginfo_t si;
        int st = 0, sig;
        pid_t pid;
        /* Reap everything that has ended; the program's end ends the init. */
        while ((pid = waitpid(-1, &st, WNOHANG | (tty ? WUNTRACED : 0))) > 0) {
            if (WIFSTOPPED(st)) {   /* with a pty: the caller's job stops with it */
                /* once until the caller's SIGCONT: a program stopping itself in a
                 * loop (continued by its own child) costs the monitor one message */
                if (pid == child && !stop_said)
                    report_stop(setup_fd, WSTOPSIG(st));
                stop_said |= pid == child;
                continue;
            }
            if (pid == child) {
                report(status_fd, st);
                _exit(shell_code(st));
            }
        }
        if (pid < 0 && errno == ECHILD) {  /* no program: nothing left to wait for */
            report(status_fd, 255 << 8);
            _exit(255);
        }
        sig = (int)syscall(SYS_rt_sigtimedwait, &all, &si, NULL, sizeof all);
        if (sig <= 0 || sig == SIGCHLD)
            continue;
        if (sig == SIGCONT && si.si_pid == 0)   /* the monitor's (no pid in here): `fg` */
            stop_said = 0;
        /* SIGKILL and SIGSTOP never get here. What a terminal sends its foreground
         * group -- ^C, ^\\, a hangup -- (and `timeout -s INT`, `kill -HUP -- -PGID`)
         * goes to the program's whole process group, as a direct run's program and its
         * children all get it (probe4 M1: `sh -c 'sleep 5'` ran on 5 s after a ^C, sh
         * waiting for its sleep; a hangup left `sleep 100 &` to die of the namespace's
         * SIGKILL, its handler never run; a ^Z stopped `sandbox exec` alone). PID 2
         * leads a process group (start_program), so its group is -child. The rest go to PID 2 alone, as `kill PID`. A shell that traps the
         * signal may then say how its child died ("Hangup", from dash) when it reaps
         * the child before running its trap: a race of dash's own, seen directly too
         * (under strace; bwrap --unshare-pid 1 to 3 times in 10), more often here. */
        if ((sig == SIGINT || sig == SIGQUIT || sig == SIGHUP || sig == SIGTSTP ||
             sig == SIGCONT || sig == SIGTTIN || sig == SIGTTOU) && kill(-child, sig) == 0) {
            /* A hangup continues a stopped group, as a terminal's does (the client gone
             * while its job was stopped: the daemon's SIGHUP): else it waits stopped,
             * its SIGHUP pending, until the wall time ends the run. */
            if (sig == SIGHUP)
                kill(-child, SIGCONT);
            continue;
        }
        kill(child, sig);
    }
}
