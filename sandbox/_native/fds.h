/* What the compiled init (init.c) and stub (stub_fork.c) share: included by both, each
 * a program of its own (no library between them). */
#ifndef SANDBOX_FDS_H
#define SANDBOX_FDS_H

#include <sys/syscall.h>
#include <unistd.h>

/* Close every descriptor but `a` and `b` (which may be equal). */
static inline void close_except(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;
    if (lo > 0)
        syscall(SYS_close_range, 0U, (unsigned)lo - 1, 0U);
    if (hi > lo + 1)
        syscall(SYS_close_range, (unsigned)lo + 1, (unsigned)hi - 1, 0U);
    syscall(SYS_close_range, (unsigned)hi + 1, ~0U, 0U);
}

#endif
