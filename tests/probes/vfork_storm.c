/* A vfork+exec storm (tests/test_audit_fuzz.py): THREADS threads each vfork and
 * exec "vfork_storm child REAL" ROUNDS times, while another thread of the
 * parent keeps rewriting `buf` (the address where each exec'd child keeps
 * REAL) between two decoys. The audit must record REAL for every child's
 * open, never a decoy: the monitor reads the memory of the child's current
 * exec, not the parent's.
 *
 *   vfork_storm parent THREADS ROUNDS DECOY REAL   prints "opens failures", exits 9
 *   vfork_storm child REAL
 *
 * Static and non-PIE: `buf` has the same address in parent and child.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char buf[4096] = "initialised, so it lives in .data";
static char *self, *decoy, *real;
static int rounds;
static volatile int stop;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *rewrite(void *arg) {
    (void)arg;
    while (!stop) {
        strcpy(buf, decoy);
        strcpy(buf, "/tmp/decoy-two");
    }
    return NULL;
}

static void *storm(void *arg) {
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        char *args[] = {self, "child", real, NULL};
        pid_t pid = vfork();
        if (pid == 0) {
            execv(self, args);
            _exit(127);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            pthread_mutex_lock(&lock);
            failures++;
            pthread_mutex_unlock(&lock);
        }
    }
    return NULL;
}

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
    if (argc != 6 || strcmp(argv[1], "parent") != 0) return 2;
    int threads = atoi(argv[2]);
    rounds = atoi(argv[3]);
    self = argv[0], decoy = argv[4], real = argv[5];
    pthread_t rw, t[64];
    if (threads < 1 || threads > 64) return 2;
    pthread_create(&rw, NULL, rewrite, NULL);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, storm, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    stop = 1;
    pthread_join(rw, NULL);
    printf("%d %d\n", threads * rounds, failures);
    return 9;
}
