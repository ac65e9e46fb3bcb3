/* The audit loop's fast path: receive, read the path, answer CONTINUE, for calls whose
 * answer and record Python has already decided (issue 15.3).
 *
 * Loaded with ctypes by sandbox/monitor/notify_fast.py (no Python headers: the GIL is
 * released for the whole call). Python keeps every decision: it handles the first
 * notification of each (syscall, flags, absolute path) itself and, when the answer was a
 * plain CONTINUE whose record does not depend on anything but that key and the state its
 * own caches already assume (the resolver's directory cache, cleared whenever the sandbox
 * renames, links or unlinks), puts the key here with a slot number. A later call with the
 * same key is answered here and returned as a compact record (slot, thread id, time),
 * which Python turns into the same record it would have made.
 *
 * What is checked per call, as the Python path does:
 *  - the path is read with process_vm_readv from the caller thread *now* (never a kept
 *    descriptor of its memory: a vfork child or a reused thread id would lie);
 *  - when the key's final name is to be followed, readlinkat(dir, name) must say EINVAL
 *    (exists, is no symlink): the final name is re-examined every time, like Python;
 *  - the answer (SECCOMP_IOCTL_NOTIF_SEND) comes after the reads, and a record is made
 *    only when it succeeded: it proves the notification was still pending, so the thread
 *    id still named the caller when its memory was read (ID_VALID's guarantee);
 *  - anything else (another syscall, another architecture, a relative path, an unknown
 *    key, a path longer than a cache key, a final name that is now a link or gone) is
 *    handed to Python unanswered, with its raw notification.
 *
 * Fairness: after the first call the loop waits with poll(2) on the listener AND the
 * hub's epoll descriptor (poll keeps SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP's same-CPU wake-up,
 * which epoll's callback drops), and returns as soon as anything else the hub watches is
 * ready, after at most `max` calls, or after `timeout_ms` of silence.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NF_NRS 512          /* syscall numbers described (x86_64 has fewer) */
#define NF_NO_ARG 0xff
#define NF_SLOTS 128        /* cache entries per run (a power of two) */
#define NF_PATH 256         /* longest cached path, with its NUL */
#define NF_PAGE 4096
#define NF_DSLOTS 64        /* directory entries per run (a power of two) */
#define NF_EMPTY_FSTAT 0x80 /* path_arg bit: a stat-family call, whose "" with AT_EMPTY_PATH
                               is fstat(2) by another name (no path: answered, not recorded) */
#define NF_API 3            /* nf_sizes(4): the Python side refuses another */

enum { NF_YIELD = 0, NF_MISS = 1, NF_GONE = 2, NF_HUP = 3, NF_SEND_ERR = 4, NF_RECV_ERR = 5,
       NF_FULL = 6 };

/* One cached key, allocated to the size of its path (issue 14: a run's cache holds what
 * it opened, ~20 + path bytes an entry, not NF_SLOTS fixed slots of NF_PATH bytes: the
 * fixed table was 35 KiB per live run in the monitor host, whatever the run did). */
struct nf_entry {
    uint32_t nr, flags;     /* key, with the path */
    uint32_t len;           /* path bytes without the NUL */
    int32_t dirfd;          /* >= 0: the final name (path + name_off) must not be a link */
    uint32_t name_off;      /* a directory key's (below): enoent_ok */
    uint32_t stamp;         /* when it was put: of two keys in one slot pair, the older goes */
    char path[];            /* len bytes and a NUL */
};

/* A run of consecutive calls answered here with the same key by the same thread (32
 * bytes, read by ctypes): `count` calls, the first at `ts`, the last at `last`. What the
 * audit keeps of such a run -- one row per key with its count and first and last times,
 * one sequence number per call, the summary's counts -- is the same as from one record
 * per call (tests/test_notify_fast_runs.py), for less work on the Python side. */
struct nf_rec {
    uint32_t slot;
    uint32_t pid;
    double ts;
    double last;
    uint32_t count;
    uint32_t spare;
};

/* A directory key (a `struct nf_entry` whose path is a prefix ending with '/', in
 * `dtab`): any path spelled prefix + NAME (one component, not "." or "..") by this
 * syscall with these flags. Python puts one only when the policy gives every name in
 * that directory one verdict (`AuditEngine.children_alike`), so the record of such a
 * call is the directory's real path joined with NAME. The final name is re-examined
 * per call, as Python's resolver does: when it is followed (`dirfd` >= 0) readlinkat
 * must say EINVAL (no link), or ENOENT when `name_off` is 1 (the prefix is the
 * directory's real path spelled plainly, so Python's record of a missing name, the
 * lexical path, is that same join). */

struct nf_run {
    int fd;
    const uint8_t *path_arg, *flags_arg;   /* NF_NRS each: the caller's, shared by the runs
                                              of one policy and kept alive by it */
    struct nf_entry **tab;  /* NF_SLOTS pointers (NULL: empty), allocated at the first put */
    struct nf_entry **dtab;  /* NF_DSLOTS pointers, allocated at the first nf_dput */
    /* filled by nf_serve */
    uint32_t vanished;      /* answered too late: the caller was gone (not recorded) */
    uint32_t unrecorded;    /* fstat by another name (NF_EMPTY_FSTAT): answered, no record */
    uint32_t stamp;         /* keys put so far (nf_entry.stamp) */
    int32_t err;            /* errno of NF_SEND_ERR / NF_RECV_ERR */
    struct seccomp_notif miss;
};

static uint32_t nf_hash(uint32_t nr, uint32_t flags, const char *p, size_t n) {
    uint32_t h = 2166136261u ^ nr ^ (flags * 16777619u);
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    /* the low bits pick the slot: mix the high ones in (flags such as
     * AT_SYMLINK_NOFOLLOW, 0x100, reach only bits 8 and up of `flags * 16777619`) */
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    return h;
}

struct nf_run *nf_new(int fd, const uint8_t *path_arg, const uint8_t *flags_arg) {
    struct nf_run *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->fd = fd;
    r->path_arg = path_arg;
    r->flags_arg = flags_arg;
    return r;
}

/* Forget every key (the descriptors named by entries belong to Python). */
void nf_clear(struct nf_run *r) {
    if (r->tab)
        for (int i = 0; i < NF_SLOTS; i++) {
            free(r->tab[i]);
            r->tab[i] = NULL;
        }
    if (r->dtab)
        for (int i = 0; i < NF_DSLOTS; i++) {
            free(r->dtab[i]);
            r->dtab[i] = NULL;
        }
}

void nf_free(struct nf_run *r) {
    if (!r) return;
    nf_clear(r);
    free(r->tab);
    free(r->dtab);
    free(r);
}

/* Whether entry `e` holds key (nr, flags, the `n` bytes at `p`). */
static int nf_same(const struct nf_entry *e, uint32_t nr, uint32_t flags, const char *p,
                   size_t n) {
    return e && e->len == n && e->nr == nr && e->flags == flags && !memcmp(e->path, p, n);
}

static struct nf_entry *nf_find(struct nf_run *r, uint32_t nr, uint32_t flags,
                                const char *p, size_t n, uint32_t *slot) {
    uint32_t h = nf_hash(nr, flags, p, n) & (NF_SLOTS - 1);
    for (int way = 0; way < 2; way++) {
        struct nf_entry *e = r->tab[h ^ way];
        if (nf_same(e, nr, flags, p, n)) {
            *slot = h ^ way;
            return e;
        }
    }
    return NULL;
}

/* The slot of key (nr, flags, the `n` bytes at `p`) among the pair h, h ^ 1 of `tab`: its
 * own, else a free one, else the one put earlier (a run's newest keys stay). */
static uint32_t nf_way(struct nf_entry **tab, uint32_t h, uint32_t nr, uint32_t flags,
                       const char *p, size_t n) {
    struct nf_entry *a = tab[h], *b = tab[h ^ 1];
    if (nf_same(a, nr, flags, p, n) || !a) return h;
    if (nf_same(b, nr, flags, p, n) || !b) return h ^ 1;
    return a->stamp <= b->stamp ? h : h ^ 1;
}

/* Put key (nr, flags, path) at *at (a new entry unless the one there has its length);
 * 0 when out of memory. */
static int nf_set(struct nf_run *r, struct nf_entry **at, uint32_t nr, uint32_t flags,
                  const char *path, uint32_t len, int32_t dirfd, uint32_t aux) {
    struct nf_entry *e = *at;
    if (!e || e->len != len) {
        free(e);
        *at = e = malloc(sizeof *e + len + 1);
        if (!e) return 0;
    }
    e->nr = nr;
    e->flags = flags;
    e->len = len;
    e->dirfd = dirfd;
    e->name_off = aux;
    e->stamp = ++r->stamp;
    memcpy(e->path, path, len);
    e->path[len] = 0;
    return 1;
}

/* Key (nr, flags, path) -> the slot Python keeps its record under; -1 when not cacheable. */
int nf_put(struct nf_run *r, uint32_t nr, uint32_t flags, const char *path, uint32_t len,
           int32_t dirfd, uint32_t name_off) {
    if (len == 0 || len >= NF_PATH || path[0] != '/' || (dirfd >= 0 && name_off >= len))
        return -1;
    if (!r->tab && !(r->tab = calloc(NF_SLOTS, sizeof *r->tab))) return -1;
    uint32_t slot = nf_way(r->tab, nf_hash(nr, flags, path, len) & (NF_SLOTS - 1), nr, flags,
                           path, len);
    return nf_set(r, &r->tab[slot], nr, flags, path, len, dirfd, name_off) ? (int)slot : -1;
}

/* Directory key (nr, flags, prefix ending with '/') -> its slot, NF_SLOTS + its index
 * (Python keeps the directory's record under it); -1 when not cacheable. */
int nf_dput(struct nf_run *r, uint32_t nr, uint32_t flags, const char *prefix, uint32_t len,
            int32_t dirfd, uint32_t enoent_ok) {
    if (len == 0 || len >= NF_PATH || prefix[0] != '/' || prefix[len - 1] != '/')
        return -1;
    if (!r->dtab && !(r->dtab = calloc(NF_DSLOTS, sizeof *r->dtab))) return -1;
    uint32_t slot = nf_way(r->dtab, nf_hash(nr, flags, prefix, len) & (NF_DSLOTS - 1), nr,
                           flags, prefix, len);
    return nf_set(r, &r->dtab[slot], nr, flags, prefix, len, dirfd, enoent_ok)
        ? (int)(NF_SLOTS + slot) : -1;
}

/* The directory entry answering path `p` (`n` bytes, NUL-terminated), or NULL. */
static struct nf_entry *nf_dfind(struct nf_run *r, uint32_t nr, uint32_t flags,
                                const char *p, size_t n, uint32_t *slot, size_t *name_at) {
    if (!r->dtab) return NULL;
    const char *last = memrchr(p, '/', n);
    if (!last) return NULL;
    size_t plen = (size_t)(last - p) + 1;
    const char *name = p + plen;
    size_t nlen = n - plen;
    if (nlen == 0 || (name[0] == '.' && (nlen == 1 || (nlen == 2 && name[1] == '.'))))
        return NULL;
    uint32_t h = nf_hash(nr, flags, p, plen) & (NF_DSLOTS - 1);
    if (!nf_same(r->dtab[h], nr, flags, p, plen) && !nf_same(r->dtab[h ^= 1], nr, flags, p, plen))
        return NULL;    /* neither way */
    struct nf_entry *d = r->dtab[h];
    if (d->dirfd >= 0) {
        char c;
        if (readlinkat(d->dirfd, name, &c, 1) >= 0) return NULL;   /* a link: Python */
        if (errno != EINVAL && !(errno == ENOENT && d->name_off)) return NULL;
    }
    *slot = NF_SLOTS + h;
    *name_at = plen;
    return d;
}

static int nf_send_continue(int fd, uint64_t id) {
    struct seccomp_notif_resp resp;
    memset(&resp, 0, sizeof resp);
    resp.id = id;
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    for (;;) {
        if (!ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp)) return 0;
        if (errno != EINTR) return -1;
    }
}

/* Answer what is cached; hand the first other notification to Python.
 *
 * `ready`: the hub saw the listener readable (then its first call is served without a
 * look at `epfd`); 0 when serving again after NF_FULL (then every wait is on both).
 *
 * Answers up to `max` calls, writes their records (at most `max`: a run of repeats of one
 * key is one record) to `out` and their number to *count. Returns NF_FULL (`max` calls
 * answered: more may be pending, the caller serves again when nothing else is due),
 * NF_YIELD (something else is ready, nothing pending, or `timeout_ms` of silence), NF_MISS (r->miss holds a notification nobody answered yet), NF_GONE (RECV
 * said ENOENT), NF_HUP (the listener hung up with nothing pending), NF_SEND_ERR or
 * NF_RECV_ERR (r->err). */
int nf_serve(struct nf_run *r, int epfd, int max, int timeout_ms, int ready,
             struct nf_rec *out, int *count, char *names) {
    struct seccomp_notif req;
    char buf[NF_PATH];
    int n = 0, calls = 0, first = ready;
    size_t names_used = 0;      /* `names`: max * NF_PATH bytes, the NAMEs of directory keys */
    r->vanished = 0;
    r->unrecorded = 0;
    r->err = 0;
    *count = 0;
    while (calls < max) {
        struct pollfd p[2] = {{.fd = r->fd, .events = POLLIN}, {.fd = epfd, .events = POLLIN}};
        /* The first call was reported ready by the hub: served whatever else is ready
         * (otherwise two busy runs would each yield to the other forever). */
        int got = poll(p, first || epfd < 0 ? 1 : 2, first ? 0 : timeout_ms);
        if (got < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (got == 0 || (!first && epfd >= 0 && p[1].revents)) break;
        if (!(p[0].revents & POLLIN)) {
            *count = n;
            return p[0].revents & (POLLHUP | POLLERR | POLLNVAL) ? NF_HUP : NF_YIELD;
        }
        first = 0;
        memset(&req, 0, sizeof req);
        if (ioctl(r->fd, SECCOMP_IOCTL_NOTIF_RECV, &req)) {
            if (errno == EINTR) continue;
            *count = n;
            r->err = errno;
            return errno == ENOENT ? NF_GONE : NF_RECV_ERR;
        }
        uint32_t nr = (uint32_t)req.data.nr, slot = 0;
        struct nf_entry *e = NULL;
        struct nf_entry *d = NULL;
        size_t name_at = 0, name_len = 0;
        int empty = 0;
        if (req.data.arch == AUDIT_ARCH_X86_64 && nr < NF_NRS && r->path_arg[nr] != NF_NO_ARG) {
            uint8_t pa = r->path_arg[nr];
            uint64_t addr = req.data.args[pa & ~NF_EMPTY_FSTAT];
            /* NF_PATH bytes in (at most) two pieces split at the page end: a path running
             * into the next page is read whole, and a next page that is not mapped only
             * ends the read there (the kernel never splits one piece). */
            size_t head = NF_PAGE - addr % NF_PAGE;
            if (head > NF_PATH) head = NF_PATH;
            struct iovec local = {.iov_base = buf, .iov_len = NF_PATH};
            struct iovec remote[2] = {
                {.iov_base = (void *)(uintptr_t)addr, .iov_len = head},
                {.iov_base = (void *)(uintptr_t)(addr + head), .iov_len = NF_PATH - head}};
            ssize_t got_bytes = addr ? process_vm_readv((pid_t)req.pid, &local, 1, remote,
                                                        head < NF_PATH ? 2 : 1, 0) : -1;
            char *nul = got_bytes > 0 ? memchr(buf, 0, (size_t)got_bytes) : NULL;
            uint8_t fa = r->flags_arg[nr];
            uint32_t flags = fa == NF_NO_ARG ? 0 : (uint32_t)req.data.args[fa];
            empty = nul == buf && (pa & NF_EMPTY_FSTAT) && (flags & AT_EMPTY_PATH);
            if (nul && buf[0] == '/') {
                if (r->tab) e = nf_find(r, nr, flags, buf, (size_t)(nul - buf), &slot);
                if (!e) {
                    d = nf_dfind(r, nr, flags, buf, (size_t)(nul - buf), &slot, &name_at);
                    name_len = (size_t)(nul - buf) - name_at;
                }
            }
            if (e && e->dirfd >= 0) {
                char c;
                if (readlinkat(e->dirfd, e->path + e->name_off, &c, 1) >= 0 || errno != EINVAL)
                    e = NULL;   /* now a link, or gone: Python looks again */
            }
        }
        if (empty) {    /* Python answers it so too, and records nothing (not a lookup) */
            if (nf_send_continue(r->fd, req.id) && errno != ENOENT) {
                *count = n;
                r->err = errno;
                return NF_SEND_ERR;
            }
            r->unrecorded++;
            calls++;
            continue;
        }
        if (!e && !d) {
            r->miss = req;
            *count = n;
            return NF_MISS;
        }
        if (nf_send_continue(r->fd, req.id)) {
            if (errno == ENOENT) {   /* the caller is gone: what was read proves nothing */
                r->vanished++;
                continue;
            }
            *count = n;
            r->err = errno;
            return NF_SEND_ERR;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        calls++;
        if (n > 0 && out[n - 1].slot == slot && out[n - 1].pid == req.pid &&
                (!d || (strlen(names + out[n - 1].spare - 1) == name_len &&
                        !memcmp(names + out[n - 1].spare - 1, buf + name_at, name_len)))) {
            /* a repeat */
            out[n - 1].count++;
            out[n - 1].last = now;
            continue;
        }
        out[n].slot = slot;
        out[n].pid = req.pid;
        out[n].ts = out[n].last = now;
        out[n].count = 1;
        out[n].spare = 0;
        if (d) {    /* the NAME, NUL-terminated; `spare` is its offset + 1 */
            memcpy(names + names_used, buf + name_at, name_len + 1);
            out[n].spare = (uint32_t)names_used + 1;
            names_used += name_len + 1;
        }
        n++;
    }
    *count = n;
    return calls >= max ? NF_FULL : NF_YIELD;
}

/* Sizes the Python side checks before trusting its ctypes mirrors. */
int nf_sizes(int what) {
    switch (what) {
    case 0: return (int)sizeof(struct nf_rec);
    case 1: return (int)sizeof(struct seccomp_notif);
    case 2: return NF_NRS;
    case 3: return NF_PATH;
    case 4: return NF_API;
    default: return -1;
    }
}

/* The notification handed over by NF_MISS (raw struct seccomp_notif), and the errno and
 * vanished and unrecorded counts of the last serve. */
const struct seccomp_notif *nf_miss(struct nf_run *r) { return &r->miss; }
int nf_err(struct nf_run *r) { return r->err; }
unsigned nf_vanished(struct nf_run *r) { return r->vanished; }
unsigned nf_unrecorded(struct nf_run *r) { return r->unrecorded; }
