/* cantainer-init: a container's first process with `run --init` (Docker's tini, small).
 *
 *     /sbin/cantainer-init COMMAND [ARG...]
 *
 * As PID 1 of its namespace it starts COMMAND as its child, passes every signal it
 * gets on to that child (PID 1 has no default actions: without it a plain SIGTERM
 * does nothing to most commands), reaps every process that ends under it (orphans
 * are re-parented to it), and exits as the child did: its code, or 128 + the signal
 * that killed it.  Built static by scripts/setup and bound read-only into the
 * container, so it needs nothing of the image.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cantainer-init COMMAND [ARG...]\n");
        return 2;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t child = fork();
    if (child < 0) {
        perror("cantainer-init: fork");
        return 125;
    }
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[1], argv + 1);
        fprintf(stderr, "cantainer-init: %s: %s\n", argv[1], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid != child)
                continue;  /* an orphan, reaped */
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            return 128 + WTERMSIG(status);
        }
    }
}
