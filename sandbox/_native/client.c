/* The compiled thin client of `sandbox exec` (sandbox/thin): the same protocol as
 * sandbox/thin/client.py, without a Python start-up (about 6 ms bare, 16 ms with
 * `site` here: more than the whole rest of a warm run's client side).
 *
 *   sandbox exec [OPTIONS] -- PROGRAM [ARGS...]
 *
 * When a daemon of the caller's runs (`sandbox daemon start`, of this install: its
 * socket is named by install_id), this sends it the
 * request (a 4-byte little-endian length, then NUL-separated fields: "exec", argc,
 * the arguments, the environment entries), with stdin, stdout, stderr and an
 * O_PATH descriptor of the working directory (SCM_RIGHTS); forwards every signal
 * a caller may send its group (wire.SIGNALS: HUP INT QUIT USR1 USR2 PIPE ALRM TERM
 * ... the real-time ones), WINCH, and TSTP and CONT (^Z, after which the client stops
 * itself, and fg: sandbox.group_signals.JOB_CONTROL) as "S<signum>", from before it connects (queued
 * until the request is sent: probe4 H9), except those the caller ignores (nohup:
 * the program ignores them too); and exits with the code of the daemon's "X<code>",
 * or dies of the signal of its "K<signum>" (the program died of ^C). The socket's directory must be a 0700 directory of the caller's and
 * the daemon must have the caller's uid, gid and groups (SO_PEERCRED, SO_PEERGROUPS),
 * as in client.py.
 *
 * Anything else (another subcommand, no daemon, SANDBOX_DAEMON=0) is handed to
 * the Python CLI: execv(SANDBOX_PYTHON, {python, "-P", "-m", "sandbox", ...}),
 * the interpreter this was built for (setup.py's build_native); -P keeps the
 * working directory off sys.path, as a console script does.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SANDBOX_PYTHON
#define SANDBOX_PYTHON "/usr/bin/python3"
#endif
#define MAX_REQUEST (1u << 20)   /* as sandbox/thin/wire.py */

extern char **environ;
static int sock = -1;
/* wire.SIGNALS; 0 ends the list, then the real-time signals libc lets us catch */
static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM,
                                SIGTERM, SIGSTKFLT, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF,
                                SIGIO, SIGPWR, SIGWINCH, SIGTSTP, SIGCONT, 0};
static volatile sig_atomic_t started;          /* the request is sent: forward at once */
static volatile sig_atomic_t queued[65];       /* before that: how many of each came */

static void give_back(void);

static void cold(char **argv)
{
    int argc = 0;
    give_back();
    while (argv[argc])
        argc++;
    char **args = calloc((size_t)argc + 4, sizeof(char *));
    if (!args)
        _exit(125);
    args[0] = SANDBOX_PYTHON;
    args[1] = "-P";
    args[2] = "-m";
    args[3] = "sandbox";
    for (int i = 1; i < argc; i++)
        args[3 + i] = argv[i];
    execv(SANDBOX_PYTHON, args);
    dprintf(2, "sandbox: error: cannot start the Python CLI %s: %s\n", SANDBOX_PYTHON,
            strerror(errno));
    _exit(125);
}

/* This install's id, as wire.install_id: FNV-1a (64-bit, folded to 32) of the real path
 * of the package directory this binary sits in (<package>/_native/sandbox), so that only
 * a daemon of this install serves it. */
static int install_id(unsigned *id)
{
#ifdef SANDBOX_PACKAGE   /* built outside the package (sandbox._native.client_path) */
    const char *exe = SANDBOX_PACKAGE;
#else
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash || slash == exe)
            return -1;
        *slash = 0;
    }
#endif
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)exe; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    *id = (unsigned)((h ^ (h >> 32)) & 0xffffffffu);
    return 0;
}

/* The state directory's daemon socket, as wire.socket_path. */
static int socket_path(char *out, size_t size, char *dir, size_t dsize)
{
    const char *home = getenv("SANDBOX_HOME");
    int n;
    if (home && *home)
        n = snprintf(dir, dsize, "%s/daemon", home);
    else {
        const char *xdg = getenv("XDG_STATE_HOME");
        if (xdg && *xdg)
            n = snprintf(dir, dsize, "%s/sandbox/daemon", xdg);
        else {
            const char *h = getenv("HOME");
            if (!h || !*h) {
                struct passwd *pw = getpwuid(getuid());
                h = pw ? pw->pw_dir : "/";
            }
            n = snprintf(dir, dsize, "%s/.local/state/sandbox/daemon", h);
        }
    }
    if (n < 0 || (size_t)n >= dsize)
        return -1;
    unsigned id;
    if (install_id(&id))
        return -1;
    n = snprintf(out, size, "%s/sock-%08x", dir, id);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

static int private_dir_ok(const char *dir)
{
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
           (st.st_mode & 077) == 0;
}

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#define GROUPS_MAX 65536   /* NGROUPS_MAX */

static int has_group(const gid_t *set, int n, gid_t g)
{
    for (int i = 0; i < n; i++)
        if (set[i] == g)
            return 1;
    return 0;
}

/* The daemon has our uid, gid and supplementary groups (wire.same_identity): its runs'
 * programs hold its groups, not ours, so a caller with other groups runs cold. */
static int same_identity(int s, const struct ucred *cred)
{
    static gid_t theirs[GROUPS_MAX], ours[GROUPS_MAX];
    socklen_t len = sizeof theirs;
    int n, m;
    if (cred->uid != getuid() || cred->uid != geteuid() || cred->gid != getgid() ||
        cred->gid != getegid())
        return 0;
    if (getsockopt(s, SOL_SOCKET, SO_PEERGROUPS, theirs, &len) || len % sizeof(gid_t))
        return 0;
    n = (int)(len / sizeof(gid_t));
    m = getgroups(GROUPS_MAX, ours);
    if (m != n)
        return 0;
    for (int i = 0; i < n; i++)
        if (!has_group(ours, m, theirs[i]) || !has_group(theirs, n, ours[i]))
            return 0;
    return 1;
}

static int connect_daemon(void)
{
    char path[4096], dir[4096];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (socket_path(path, sizeof path, dir, sizeof dir) || !private_dir_ok(dir) ||
        strlen(path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) || getsockopt(s, SOL_SOCKET, SO_PEERCRED,
                                                                   &cred, &len) ||
        !same_identity(s, &cred)) {
        close(s);
        return -1;
    }
    return s;
}

struct buf {
    char *p;
    size_t len, cap;
};

static int put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096);
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* "exec\0argc\0arg...\0NAME=VALUE..." after a 4-byte length (wire.encode). */
static int request(struct buf *b, char **argv)
{
    char num[16];
    int argc = 0;
    while (argv[argc + 1])
        argc++;
    if (put(b, "\0\0\0\0exec", 8))
        return -1;
    snprintf(num, sizeof num, "%d", argc);
    if (put(b, "", 1) || put(b, num, strlen(num)))
        return -1;
    for (int i = 1; i <= argc; i++)
        if (put(b, "", 1) || put(b, argv[i], strlen(argv[i])))
            return -1;
    for (char **e = environ; *e; e++)
        if (strchr(*e, '=') && **e != '=' && (put(b, "", 1) || put(b, *e, strlen(*e))))
            return -1;
    uint32_t body = (uint32_t)(b->len - 4);
    if (body > MAX_REQUEST)
        return -1;
    for (int i = 0; i < 4; i++)
        b->p[i] = (char)((body >> (8 * i)) & 0xff);
    return 0;
}

static void forward(int sig)
{
    int saved = errno;
    char msg[2] = {'S', (char)sig};
    if (!started) {
        if (sig > 0 && sig < 65)
            queued[sig]++;
    } else if (sock >= 0) {
        (void)send(sock, msg, 2, MSG_NOSIGNAL);
        if (sig == SIGTSTP)     /* ^Z: the program's group stops, then we do (fg: CONT) */
            kill(getpid(), SIGSTOP);
    }
    errno = saved;
}

/* The handlers, first thing: a signal in the client's first milliseconds is the
 * program's too. A signal the caller ignores stays ignored. */
static void catch_signals(void)
{
    struct sigaction sa = {.sa_handler = forward, .sa_flags = SA_RESTART}, old;
    sigemptyset(&sa.sa_mask);
    for (int i = 0;; i++) {
        int sig = forwarded[i];
        if (sig == 0)
            break;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(sig, &sa, NULL);
    }
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(sig, &sa, NULL);
}

/* The request is sent: the queued signals go, in the order of their numbers. */
static void start_forwarding(void)
{
    sigset_t all, was;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &was);
    started = 1;
    for (int sig = 1; sig < 65; sig++)
        for (; queued[sig] > 0; queued[sig]--)
            forward(sig);
    sigprocmask(SIG_SETMASK, &was, NULL);
}

/* No daemon run: the dispositions back to their defaults (an exec would do it for the
 * caught ones) and what was queued raised again, for the cold path to act on. */
static void give_back(void)
{
    struct sigaction sa = {.sa_handler = SIG_DFL}, old;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < 65; sig++) {
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == forward) {
            sigaction(sig, &sa, NULL);
            for (; queued[sig] > 0; queued[sig]--)
                raise(sig);
        }
    }
}

/* End by `sig`, as the program did (sandbox.process_end.die_by): a shell aborts its
 * loop only when its child died of the ^C. No core file for SIGQUIT. */
static int die_by(int sig)
{
    struct sigaction sa = {.sa_handler = SIG_DFL};
    struct rlimit rl;
    sigset_t one;
    if (getrlimit(RLIMIT_CORE, &rl) == 0) {
        rl.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &rl);
    }
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigemptyset(&one);
    sigaddset(&one, sig);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    raise(sig);
    return 128 + sig;
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *opt = getenv("SANDBOX_DAEMON");
    if (!argv[1] || strcmp(argv[1], "exec") || (opt && !strcmp(opt, "0")))
        cold(argv);
    /* A closed 0, 1 or 2 is sent as an O_PATH descriptor of /dev/null, which the run
     * takes for closed (sandbox/std_fds.py: the program's is closed too); it must not be
     * taken by the socket. Without a daemon it is closed again by the exec (CLOEXEC). */
    int fds[4];
    for (int fd = 0; fd < 3; fd++) {
        fds[fd] = fd;
        if (fcntl(fd, F_GETFD) < 0)
            fds[fd] = open("/dev/null", O_PATH | O_CLOEXEC);
        if (fds[fd] < 0)
            cold(argv);
    }
    catch_signals();
    struct buf b = {0};
    if (request(&b, argv))
        cold(argv);            /* too large for the daemon: the cold path takes it */
    sock = connect_daemon();
    if (sock < 0)
        cold(argv);
    fds[3] = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fds[3] < 0)
        cold(argv);
    char ctl[CMSG_SPACE(sizeof fds)];
    memset(ctl, 0, sizeof ctl);
    size_t first = b.len < 65536 ? b.len : 65536;
    struct iovec iov = {.iov_base = b.p, .iov_len = first};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(cm), fds, sizeof fds);
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n <= 0)
        cold(argv);            /* nothing reached the daemon: nothing ran */
    close(fds[3]);
    for (size_t off = (size_t)n; off < b.len;) {
        ssize_t w = send(sock, b.p + off, b.len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(b.p);
    start_forwarding();
    char got[2];
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(sock, got + have, 2 - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        if (have == 2) {
            if (got[0] == 'X')
                return (unsigned char)got[1];
            if (got[0] == 'K')   /* the program died of ^C or ^\: so does the client */
                return die_by((unsigned char)got[1]);
            have = 0;          /* nothing else is sent; ignore it */
        }
    }
    /* The daemon went away in the middle of the run: its outcome is unknown. */
    static const char msg[] = "sandbox: error: the sandbox daemon ended during the run\n";
    (void)!write(2, msg, sizeof msg - 1);
    return 125;
}
