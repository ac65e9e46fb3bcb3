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
 *     CHILD_PID: the init of a PID namespace ignores a signal it has no
 *     handler for; the program, as PID 2, has ordinary signal semantics;
 *   - when CHILD_PID ends, writes its raw wait status as decimal text on
 *     STATUS_FD (a non-blocking pipe the monitor reads: an init's own exit
 *     code cannot say "killed by signal N") and exits with the shell's
 *     convention (the code, or 128+N). The kernel then kills whatever is
 *     left in the namespace.
 *
 * The same binary is also the waiting half of the stub (`sandbox-init --stub
 * STATUS_FD PID1`): the stub (Python) enters the namespaces and forks PID 1,
 * then replaces itself with this mode, which only waits for PID 1 and sends its
 * raw wait status on STATUS_FD (the stub's SOCK_SEQPACKET status socket) as the
 * one message of sandbox/protocol.py it ever sends, Pid1Exited:
 * {"type":"pid1_exit","payload":{"status":N}}. So a live sandbox costs no
 * Python interpreter between the monitor and PID 1 (issue 14).
 *
 * It holds nothing worth taking: no descriptor but STATUS_FD (on which the
 * program could only claim a status it can produce anyway by exiting or
 * killing itself), and it makes itself non-dumpable first, so even a policy
 * that allows ptrace or pidfd_getfd cannot reach its memory or descriptors.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

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

static void report(int fd, int status)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%d\n", status);
    if (n > 0 && write(fd, buf, (size_t)n) < 0) {
        /* the monitor falls back to our exit code */
    }
    close(fd);
}

static int shell_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

/* The stub's waiting half: PID 1's raw status as a Pid1Exited message, then exit. */
static int stub(int status_fd, pid_t pid1)
{
    char buf[80];
    int st = 0, n;
    pid_t got;

    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);   /* dies with the monitor, as before the exec */
    do {
        got = waitpid(pid1, &st, 0);
    } while (got < 0 && errno == EINTR);
    if (got != pid1)
        return 1;   /* no status: the monitor sees the socket close and reports none */
    n = snprintf(buf, sizeof buf, "{\"type\":\"pid1_exit\",\"payload\":{\"status\":%d}}", st);
    if (n > 0 && n < (int)sizeof buf && write(status_fd, buf, (size_t)n) < 0)
        return 1;
    return 0;
}

int main(int argc, char **argv)
{
    sigset_t all;
    int status_fd, child;

    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (argc == 4 && strcmp(argv[1], "--stub") == 0) {
        status_fd = parse(argv[2]);
        child = parse(argv[3]);
        if (status_fd < 0 || child <= 0)
            return 125;
        return stub(status_fd, child);
    }
    if (argc != 3)
        return 125;
    status_fd = parse(argv[1]);
    child = parse(argv[2]);
    if (status_fd < 0 || child <= 0)
        return 125;
    /* Every signal blocked and taken with sigwaitinfo: a blocked signal is
     * queued even for a namespace's init, an unhandled one would be dropped.
     * The sandboxee exec'd us with everything blocked already, so a SIGCHLD
     * of a program that ended early is pending, not lost. */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int sig = 1; sig < NSIG; sig++)   /* an inherited SIG_IGN must not drop a signal */
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    for (;;) {
        siginfo_t si;
        int st = 0, sig;
        pid_t pid;
        /* Reap everything that has ended; the program's end ends the init. */
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            if (pid == child) {
                report(status_fd, st);
                _exit(shell_code(st));
            }
        }
        if (pid < 0 && errno == ECHILD) {  /* no program: nothing left to wait for */
            report(status_fd, 255 << 8);
            _exit(255);
        }
        sig = sigwaitinfo(&all, &si);
        if (sig <= 0 || sig == SIGCHLD)
            continue;
        kill(child, sig);  /* SIGKILL and SIGSTOP never get here */
    }
}
