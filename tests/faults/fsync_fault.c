/*
 * fsync_fault.so — a test-only LD_PRELOAD shim that makes fsync/fdatasync fail or slow
 * down on demand, the way a dying SD card or a full disk does.
 *
 * The control file named by TERN_FSYNC_FAULT is read on every call (tests rewrite it
 * while tern runs). One rule per line; delays add up, the first matching failure applies:
 *
 *   eio-once <id> <path substring>   fail the first matching call with EIO, once per <id>
 *   eio <path substring>             fail every matching call with EIO
 *   delay-ms <n> <path substring>    sleep n milliseconds first (then sync, or fail)
 *
 * The path substring is matched against /proc/self/fd/<fd>; "*" matches every file.
 * Every injected failure is appended to <control file>.log, one line per call.
 * Build: cc -shared -fPIC -O2 -o fsync_fault.so fsync_fault.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char fired[64][64];
static int fired_count;

static int already_fired(const char *id) {
    for (int i = 0; i < fired_count; i++)
        if (strcmp(fired[i], id) == 0) return 1;
    return 0;
}

static void note(const char *control, const char *what, const char *path) {
    char log_path[4096];
    snprintf(log_path, sizeof log_path, "%s.log", control);
    FILE *log = fopen(log_path, "a");
    if (log) {
        fprintf(log, "%s %s\n", what, path);
        fclose(log);
    }
}

/* 0: no fault; otherwise the errno to fail with. Sleeps for delay rules. */
static int decide(int fd) {
    const char *control = getenv("TERN_FSYNC_FAULT");
    if (!control) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = 0;
    FILE *f = fopen(control, "r");
    if (!f) return 0;
    char line[4096];
    int result = 0;
    long delay = 0;
    while (fgets(line, sizeof line, f)) {
        char kind[32] = {0}, a[1024] = {0}, b[1024] = {0};
        int fields = sscanf(line, "%31s %1023s %1023s", kind, a, b);
        if (fields < 2) continue;
        const char *pattern = (strcmp(kind, "eio") == 0) ? a : b;
        if (fields < 3 && strcmp(kind, "eio") != 0) continue;
        if (strcmp(pattern, "*") != 0 && !strstr(path, pattern)) continue;
        if (strcmp(kind, "eio") == 0) {
            note(control, "eio", path);
            result = EIO;
            break;
        }
        if (strcmp(kind, "eio-once") == 0) {
            pthread_mutex_lock(&lock);
            int fire = !already_fired(a) && fired_count < 64;
            if (fire) {
                strncpy(fired[fired_count], a, 63);
                fired_count++;
            }
            pthread_mutex_unlock(&lock);
            if (fire) {
                note(control, "eio-once", path);
                result = EIO;
                break;
            }
            continue;
        }
        if (strcmp(kind, "delay-ms") == 0) {
            delay += atol(a);
            continue;
        }
    }
    fclose(f);
    if (delay > 0) {
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return result;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    int e = decide(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    int e = decide(fd);
    if (e) {
        errno = e;
        return -1;
    }
    return real(fd);
}
