/* The vfork+exec lie (issue 10, finding 5): make the monitor record a path the
 * program never opened.
 *
 *   vfork_exec parent N DECOY REAL   N times: vfork, the child execs
 *                                    "vfork_exec child REAL"; the parent keeps
 *                                    DECOY in `buf` (and rewrites it each round)
 *   vfork_exec child REAL            copies REAL into `buf`, opens it, reads it
 *
 * Built static and non-PIE (no loader opens first), so `buf` has the same address in parent and child. During the
 * vfork the child shares the parent's memory: a monitor that opens
 * /proc/<tid>/mem for the child's execve and keeps that descriptor reads the
 * *parent's* `buf` (DECOY) when the exec'd child later opens REAL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char buf[4096] = "initialised, so it lives in .data";

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "child") == 0) {
        strcpy(buf, argv[2]);
        int fd = open(buf, O_RDONLY);
        if (fd < 0) return 3;
        char b[64];
        ssize_t n = read(fd, b, sizeof b);
        close(fd);
        return n > 0 ? 0 : 4;
    }
    if (argc != 5 || strcmp(argv[1], "parent") != 0) return 2;
    int rounds = atoi(argv[2]);
    int bad = 0;
    for (int i = 0; i < rounds; i++) {
        strcpy(buf, argv[3]);            /* the decoy, where the child's REAL will be */
        char *args[] = {argv[0], "child", argv[4], NULL};
        pid_t pid = vfork();
        if (pid == 0) {
            execv(argv[0], args);
            _exit(127);
        }
        if (pid < 0) return 5;
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    printf("%d %d\n", rounds, bad);
    return 0;
}
