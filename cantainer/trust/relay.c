/* cantainer-relay: the TLS relay in front of this member's dqlite node.
 *
 *     cantainer-relay DATA_DIR PARENT_PID CONTROL_FD LOG_LEVEL
 *
 * libdqlite speaks plain; every byte it exchanges with other members passes here,
 * as go-dqlite's `app` proxy does it.  It is compiled (OpenSSL, one thread, one
 * epoll) because a Raft round trip crosses four relays, two on each host, and each
 * relay is a wake-up on cores the daemons share: in Python each one cost an append
 * at batch 1 a fifth of its rate (bench.trust, bench/gaps.md).
 *
 * The daemon (trust/dqlite.py) starts it and talks to it over one SOCK_SEQPACKET
 * pair (CONTROL_FD), one text message a packet, file descriptors attached:
 *
 *   daemon -> relay  "listen"                 + [the listening TCP socket]
 *                    "dial ADDRESS"           + [one end of a socket pair]: relay it
 *                                               to ADDRESS over TLS (Raft: libdqlite's
 *                                               connect function)
 *                    "local ID"               + [a connection to the node's abstract
 *                                               socket] for incoming connection ID, or
 *                                               none: the node is not serving
 *                    "gate CAUGHT_UP\nTRUSTED\nREVOKED"   0 or 1, then two lines of
 *                                               space-separated SHA-256 fingerprints
 *   relay -> daemon  "local ID"               incoming connection ID passed the gate:
 *                                               it needs a connection to the node
 *
 * The gate is trust/tls.py's Gate: a connection to this member is admitted if the
 * peer's certificate (chained to the cluster CA, TLS 1.3 both ways) is a live
 * member's; a connection from it is made only to a live member's certificate, or,
 * until this member has caught up with the log, to any the log has not revoked.
 * A gate update cuts the connections it no longer allows.
 *
 * The end of the pair (the daemon stopped or died) ends the relay; so does the
 * daemon's death, through PR_SET_PDEATHSIG.  Refusals go to stderr, the daemon's.
 * Only OpenSSL does cryptography here.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HANDSHAKE_TIMEOUT 5.0 /* seconds from accept or dial to a relaying connection */
#define BUF (1 << 16)         /* bytes buffered each way before reading that way stops */
#define FP_LEN 64             /* a SHA-256 in hex */
#define MAX_FDS 4
#define CONTROL_MAX (1 << 20)

enum state { CONNECTING, HANDSHAKE, WAITING, RELAYING, CLOSED };
enum kind { K_CONTROL, K_LISTENER, K_TLS, K_PLAIN };

struct relay;
struct end { enum kind kind; struct relay *relay; int fd; uint32_t events; int watched; };

struct relay {
    enum state state;
    int incoming;
    struct end tls, plain;  /* tls.fd: the TCP socket; plain.fd: the node's side */
    SSL *ssl;
    char fingerprint[FP_LEN + 1];
    char where[300];         /* "from 192.0.2.2" or "to 192.0.2.2:9000", for the log */
    double deadline;
    unsigned long id;        /* an incoming connection waiting for the node's */
    unsigned char to_plain[BUF], to_tls[BUF];
    size_t to_plain_len, to_tls_len;
    int tls_open, plain_open, tls_wants_write;
    struct relay *prev, *next;
};

static struct {
    int epoll, debug, running, listener_paused;
    struct end control, listener;
    SSL_CTX *server, *client;
    char own[FP_LEN + 1];
    char *trusted, *revoked;  /* " fp fp ... ": searched for " fp" */
    int caught_up;
    struct relay *relays;
    unsigned long next_id;
} P;

/* -- the log: the daemon's format ----------------------------------------------------- */

static void say(const char *level, const char *fmt, ...) {
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    va_list ap;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s,%03ld cantainer.trust.relay %s ", stamp, (long)tv.tv_usec / 1000, level);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
#define DEBUG(...) do { if (P.debug) say("DEBUG", __VA_ARGS__); } while (0)
#define WARNING(...) say("WARNING", __VA_ARGS__)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *ssl_error(void) {
    unsigned long e = ERR_get_error();
    static char text[256];
    if (!e)
        return errno ? strerror(errno) : "connection ended";
    ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    return text;
}

/* -- the gate ------------------------------------------------------------------------- */

static int in_set(const char *set, const char *fp) {
    char needle[FP_LEN + 3];
    if (!set || !fp[0])
        return 0;
    snprintf(needle, sizeof needle, " %s ", fp);
    return strstr(set, needle) != NULL;
}

static int admits(const char *fp) {  /* a connection to this member from fp's holder */
    return fp[0] && (strcmp(fp, P.own) == 0 || in_set(P.trusted, fp));
}

static int reaches(const char *fp) {  /* a connection from this member to fp's holder */
    if (!fp[0])
        return 0;
    if (strcmp(fp, P.own) == 0)
        return 1;
    return P.caught_up ? in_set(P.trusted, fp) : !in_set(P.revoked, fp);
}

static int fingerprint_of(SSL *ssl, char out[FP_LEN + 1]) {
    X509 *cert = SSL_get0_peer_certificate(ssl);
    unsigned char *der = NULL, digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int len;
    out[0] = 0;
    if (!cert || (len = i2d_X509(cert, &der)) <= 0)
        return -1;
    int ok = EVP_Digest(der, len, digest, &n, EVP_sha256(), NULL);
    OPENSSL_free(der);
    if (!ok || n != 32)
        return -1;
    for (unsigned int i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", digest[i]);
    return 0;
}

/* -- epoll ------------------------------------------------------------------------------ */

static void want(struct end *end, uint32_t events) {
    if (end->fd < 0 || (end->watched && end->events == events))
        return;
    struct epoll_event ev = {.events = events, .data.ptr = end};
    if (!events) {
        if (end->watched)
            epoll_ctl(P.epoll, EPOLL_CTL_DEL, end->fd, NULL);
        end->watched = 0;
    } else {
        epoll_ctl(P.epoll, end->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, end->fd, &ev);
        end->watched = 1;
    }
    end->events = events;
}

static void tune(int fd) {
    int one = 1, idle = 3, interval = 3, count = 3, timeout = 30000;
    /* No Nagle (with delayed ACKs it costs 40 ms a round trip), keepalives, and a
     * bound on unacknowledged data to a dead peer: as trust/tls.py's tune. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout);
}

/* -- the daemon ------------------------------------------------------------------------- */

static void send_control(const char *text, int fd) {
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control_buf;
    char *cbuf = control_buf.buf;
    struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(cbuf, 0, sizeof control_buf.buf);
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof control_buf.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    if (sendmsg(P.control.fd, &msg, MSG_NOSIGNAL) < 0)
        P.running = 0;
}

/* -- one relay ---------------------------------------------------------------------------- */

static void watch(struct relay *r);

static void close_relay(struct relay *r) {
    if (r->state == CLOSED)
        return;
    r->state = CLOSED;
    want(&r->tls, 0);
    want(&r->plain, 0);
    if (r->ssl)
        SSL_free(r->ssl);
    r->ssl = NULL;
    if (r->tls.fd >= 0) {
        shutdown(r->tls.fd, SHUT_RDWR);
        close(r->tls.fd);
    }
    if (r->plain.fd >= 0) {
        shutdown(r->plain.fd, SHUT_RDWR);
        close(r->plain.fd);
    }
    r->tls.fd = r->plain.fd = -1;
    if (r->prev)
        r->prev->next = r->next;
    else
        P.relays = r->next;
    if (r->next)
        r->next->prev = r->prev;
    /* Freed at the end of the epoll round: later events of the round may name it. */
    r->next = r->prev = NULL;
}

static struct relay *closed_relays[1024];
static int n_closed;

static void refuse(struct relay *r, int quiet, const char *why) {
    if (quiet)
        DEBUG("dqlite: connection %s ended: %s", r->where, why);
    else
        WARNING("dqlite: refused a connection %s: %s", r->where, why);
    close_relay(r);
    if (n_closed < (int)(sizeof closed_relays / sizeof *closed_relays))
        closed_relays[n_closed++] = r;
    /* beyond that (never in practice), leaked rather than freed under a live pointer */
}

static struct relay *new_relay(int tcp, int incoming, int plain) {
    struct relay *r = calloc(1, sizeof *r);
    if (!r) {
        close(tcp);
        if (plain >= 0)
            close(plain);
        return NULL;
    }
    r->incoming = incoming;
    r->tls = (struct end){.kind = K_TLS, .relay = r, .fd = tcp};
    r->plain = (struct end){.kind = K_PLAIN, .relay = r, .fd = plain};
    r->tls_open = r->plain_open = 1;
    r->deadline = now() + HANDSHAKE_TIMEOUT;
    r->next = P.relays;
    if (P.relays)
        P.relays->prev = r;
    P.relays = r;
    return r;
}

static int wrap(struct relay *r) {
    r->ssl = SSL_new(r->incoming ? P.server : P.client);
    if (!r->ssl || !SSL_set_fd(r->ssl, r->tls.fd))
        return -1;
    if (r->incoming)
        SSL_set_accept_state(r->ssl);
    else
        SSL_set_connect_state(r->ssl);
    SSL_set_mode(r->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    r->state = HANDSHAKE;
    return 0;
}

static void start_relaying(struct relay *r) {
    r->state = RELAYING;
}

static void handshake(struct relay *r) {
    int rc = SSL_do_handshake(r->ssl);
    if (rc != 1) {
        int err = SSL_get_error(r->ssl, rc);
        if (err == SSL_ERROR_WANT_READ) {
            want(&r->tls, EPOLLIN);
            return;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            want(&r->tls, EPOLLOUT);
            return;
        }
        refuse(r, 1, ssl_error());
        return;
    }
    fingerprint_of(r->ssl, r->fingerprint);
    if (r->incoming) {
        if (!admits(r->fingerprint)) {
            refuse(r, 0, "its certificate is no live member's");
            return;
        }
        r->state = WAITING;
        want(&r->tls, 0);
        r->id = ++P.next_id;
        char text[64];
        snprintf(text, sizeof text, "local %lu", r->id);
        send_control(text, -1);
    } else {
        if (!reaches(r->fingerprint)) {
            refuse(r, 0, "its certificate was revoked");
            return;
        }
        start_relaying(r);
    }
}

static void give_local(struct relay *r, int local) {
    if (local < 0) {
        refuse(r, 1, "the node is not serving");
        return;
    }
    if (!admits(r->fingerprint)) {  /* the gate moved meanwhile */
        close(local);
        refuse(r, 0, "its member left the cluster");
        return;
    }
    r->plain.fd = local;
    start_relaying(r);
}

/* Move what can move, both ways; called on any event of either end. */
static void pump(struct relay *r) {
    int moved = 1;
    while (moved && r->state == RELAYING) {
        moved = 0;
        r->tls_wants_write = 0;
        /* TLS -> plain */
        while (r->tls_open && r->to_plain_len < BUF) {
            int n = SSL_read(r->ssl, r->to_plain + r->to_plain_len, BUF - r->to_plain_len);
            if (n > 0) {
                r->to_plain_len += n;
                continue;
            }
            int err = SSL_get_error(r->ssl, n);
            if (err == SSL_ERROR_WANT_WRITE)
                r->tls_wants_write = 1;
            else if (err != SSL_ERROR_WANT_READ) {
                if (err != SSL_ERROR_ZERO_RETURN)
                    DEBUG("dqlite: connection %s: %s", r->where, ssl_error());
                ERR_clear_error();
                r->tls_open = 0;
            }
            break;
        }
        if (r->to_plain_len) {
            ssize_t n = send(r->plain.fd, r->to_plain, r->to_plain_len, MSG_NOSIGNAL);
            if (n > 0) {
                memmove(r->to_plain, r->to_plain + n, r->to_plain_len - n);
                r->to_plain_len -= n;
                moved = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                r->plain_open = r->tls_open = 0;
                r->to_plain_len = 0;
            }
        }
        /* plain -> TLS */
        if (r->plain_open && r->to_tls_len < BUF) {
            ssize_t n = recv(r->plain.fd, r->to_tls + r->to_tls_len, BUF - r->to_tls_len, 0);
            if (n > 0) {
                r->to_tls_len += n;
                moved = 1;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                r->plain_open = 0;
            }
        }
        while (r->to_tls_len && r->tls_open) {
            int n = SSL_write(r->ssl, r->to_tls, r->to_tls_len);
            if (n > 0) {
                memmove(r->to_tls, r->to_tls + n, r->to_tls_len - n);
                r->to_tls_len -= n;
                continue;
            }
            int err = SSL_get_error(r->ssl, n);
            if (err == SSL_ERROR_WANT_WRITE)
                r->tls_wants_write = 1;
            else if (err != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                r->tls_open = r->plain_open = 0;
                r->to_tls_len = 0;
            }
            break;
        }
        if (!r->tls_open)
            r->to_tls_len = 0;  /* nobody to send it to */
    }
}

static void ready(struct relay *r, struct end *end, uint32_t events) {
    (void)end;
    if (r->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(r->tls.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            refuse(r, 1, strerror(err));
            return;
        }
        if (wrap(r) < 0) {
            refuse(r, 1, ssl_error());
            return;
        }
    }
    (void)events;
    if (r->state == HANDSHAKE) {
        handshake(r);
        if (r->state != RELAYING)
            return;
    }
    if (r->state == RELAYING)
        pump(r);
    watch(r);
}

/* What epoll waits for next; or the end, when a side is gone and what it sent is out. */
static void watch(struct relay *r) {
    if (r->state == CONNECTING) {
        want(&r->tls, EPOLLOUT);
        return;
    }
    if (r->state != RELAYING)
        return;
    if ((!r->tls_open && !r->to_plain_len) || (!r->plain_open && !r->to_tls_len)) {
        refuse(r, 1, r->tls_open ? "the node hung up" : "the peer hung up");
        return;
    }
    want(&r->tls, (r->tls_open && r->to_plain_len < BUF ? EPOLLIN : 0)
                  | (r->to_tls_len || r->tls_wants_write ? EPOLLOUT : 0));
    want(&r->plain, (r->plain_open && r->to_tls_len < BUF ? EPOLLIN : 0)
                    | (r->to_plain_len ? EPOLLOUT : 0));
}

/* -- connections ---------------------------------------------------------------------------- */

static void accept_all(void) {
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(P.listener.fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                /* Out of descriptors or memory: the listener stays readable, so stop
                 * watching it until a relay has closed (else epoll spins). */
                WARNING("relay: cannot accept: %s: listening again once a connection ends",
                        strerror(errno));
                epoll_ctl(P.epoll, EPOLL_CTL_DEL, P.listener.fd, NULL);
                P.listener_paused = 1;
            }
            return;
        }
        tune(fd);
        struct relay *r = new_relay(fd, 1, -1);
        if (!r)
            continue;
        char host[INET6_ADDRSTRLEN] = "a peer";
        if (peer.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, host, sizeof host);
        else if (peer.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, host, sizeof host);
        snprintf(r->where, sizeof r->where, "from %s", host);
        if (wrap(r) < 0) {
            refuse(r, 1, ssl_error());
            continue;
        }
        ready(r, &r->tls, EPOLLIN);
    }
}

static void dial(const char *address, int plain) {
    char host[256];
    const char *colon = strrchr(address, ':');
    int port = colon ? atoi(colon + 1) : 0;
    size_t n = colon ? (size_t)(colon - address) : 0;
    if (n >= sizeof host)
        n = 0;
    memcpy(host, address, n);
    host[n] = 0;
    if (host[0] == '[' && n > 1 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = 0;
    }
    struct sockaddr_storage sa = {0};
    socklen_t len;
    int family;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        family = v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        family = v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        len = sizeof *v6;
    } else {
        WARNING("dqlite: cannot dial %s: not an address", address);
        close(plain);
        return;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        close(plain);
        return;
    }
    tune(fd);
    struct relay *r = new_relay(fd, 0, plain);
    if (!r)
        return;
    snprintf(r->where, sizeof r->where, "to %.280s", address);
    r->state = CONNECTING;
    if (connect(fd, (struct sockaddr *)&sa, len) < 0 && errno != EINPROGRESS) {
        refuse(r, 1, strerror(errno));
        return;
    }
    watch(r);
}

static void expire(void) {
    double t = now();
    struct relay *r = P.relays, *next;
    for (; r; r = next) {
        next = r->next;
        if (r->state != RELAYING && t > r->deadline)
            refuse(r, 1, "no handshake in time");
    }
}

static int setting_up(void) {
    for (struct relay *r = P.relays; r; r = r->next)
        if (r->state != RELAYING)
            return 1;
    return 0;
}

/* -- the gate's update ------------------------------------------------------------------------ */

static char *set_from(const char *line, size_t n) {
    char *set = malloc(n + 3);
    if (!set)
        return NULL;
    set[0] = ' ';
    memcpy(set + 1, line, n);
    set[n + 1] = ' ';
    set[n + 2] = 0;
    return set;
}

static void update_gate(const char *body) {
    /* "CAUGHT_UP\nTRUSTED\nREVOKED" */
    const char *a = strchr(body, '\n'), *b = a ? strchr(a + 1, '\n') : NULL;
    if (!a || !b) {
        WARNING("relay: a gate message without its three lines");
        return;
    }
    char *trusted = set_from(a + 1, b - a - 1), *revoked = set_from(b + 1, strlen(b + 1));
    if (!trusted || !revoked) {
        free(trusted);
        free(revoked);
        return;
    }
    free(P.trusted);
    free(P.revoked);
    P.trusted = trusted;
    P.revoked = revoked;
    P.caught_up = body[0] == '1';
    struct relay *r = P.relays, *next;
    for (; r; r = next) {
        next = r->next;
        if ((r->state == RELAYING || r->state == WAITING) &&
            !(r->incoming ? admits(r->fingerprint) : reaches(r->fingerprint)))
            refuse(r, 0, "its member left the cluster");
    }
}

static int fcntl_nonblock(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static struct relay *waiting(unsigned long id) {
    for (struct relay *r = P.relays; r; r = r->next)
        if (r->state == WAITING && r->id == id)
            return r;
    return NULL;
}

static void control(void) {
    static char data[CONTROL_MAX + 1];
    for (;;) {
        union { char buf[CMSG_SPACE(MAX_FDS * sizeof(int))]; struct cmsghdr align; } cbuf;
        struct iovec iov = {.iov_base = data, .iov_len = CONTROL_MAX};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf};
        ssize_t n = recvmsg(P.control.fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        int fds[MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (int i = 0; i < k && nfds < MAX_FDS; i++)
                    memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            }
        if (n <= 0) {
            P.running = 0;  /* the daemon is gone */
            return;
        }
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
            WARNING("relay: a message from the daemon was cut short");
        data[n] = 0;
        int fd = nfds ? fds[0] : -1;
        for (int i = 1; i < nfds; i++)
            close(fds[i]);
        if (strcmp(data, "listen") == 0 && fd >= 0) {
            P.listener = (struct end){.kind = K_LISTENER, .fd = fd};
            {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &P.listener};
                if (fcntl_nonblock(fd) < 0 || epoll_ctl(P.epoll, EPOLL_CTL_ADD, fd, &ev) < 0)
                    WARNING("relay: cannot watch the listener: %s", strerror(errno));
            }
        } else if (strncmp(data, "dial ", 5) == 0 && fd >= 0) {
            fcntl_nonblock(fd);
            dial(data + 5, fd);
        } else if (strncmp(data, "local ", 6) == 0) {
            struct relay *r = waiting(strtoul(data + 6, NULL, 10));
            if (fd >= 0)
                fcntl_nonblock(fd);
            if (!r) {
                if (fd >= 0)
                    close(fd);
            } else {
                give_local(r, fd);
                if (r->state == RELAYING) {
                    pump(r);  /* bytes that came with the peer's last handshake flight */
                    watch(r);
                }
            }
        } else if (strncmp(data, "gate ", 5) == 0) {
            if (fd >= 0)
                close(fd);
            update_gate(data + 5);
        } else {
            WARNING("relay: an unknown message from the daemon: %.40s", data);
            if (fd >= 0)
                close(fd);
        }
    }
}

/* -- start-up ----------------------------------------------------------------------------- */

static SSL_CTX *context(int server, const char *dir) {
    char cert[4096], key[4096], ca[4096];
    snprintf(cert, sizeof cert, "%s/tls/node.crt", dir);
    snprintf(key, sizeof key, "%s/tls/node.key", dir);
    snprintf(ca, sizeof ca, "%s/tls/ca.crt", dir);
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        say("ERROR", "relay: cannot load this member's credentials from %s/tls: %s", dir,
            ssl_error());
        exit(1);
    }
    /* Both sides show a certificate of the cluster CA; members are named by its
     * fingerprint (the gate), not by a host name. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_num_tickets(ctx, 0);  /* no resumption: every connection shows its certificate */
    return ctx;
}

static void own_fingerprint(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tls/node.crt", dir);
    FILE *f = fopen(path, "r");
    X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL, digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int len;
    if (f)
        fclose(f);
    if (!cert || (len = i2d_X509(cert, &der)) <= 0 ||
        !EVP_Digest(der, len, digest, &n, EVP_sha256(), NULL)) {
        say("ERROR", "relay: cannot read %s", path);
        exit(1);
    }
    for (unsigned int i = 0; i < n; i++)
        sprintf(P.own + 2 * i, "%02x", digest[i]);
    OPENSSL_free(der);
    X509_free(cert);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: cantainer-relay DATA_DIR PARENT_PID CONTROL_FD LOG_LEVEL\n");
        return 2;
    }
    pid_t parent = atoi(argv[2]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)  /* it died before the line above */
        return 0;
    /* Ctrl-C reaches the whole process group: the daemon stops, then closes the pair. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);
    P.debug = strcmp(argv[4], "DEBUG") == 0;
    P.server = context(1, argv[1]);
    P.client = context(0, argv[1]);
    own_fingerprint(argv[1]);
    P.control = (struct end){.kind = K_CONTROL, .fd = atoi(argv[3])};
    P.listener.fd = -1;
    P.epoll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &P.control};
    if (P.epoll < 0 || fcntl_nonblock(P.control.fd) < 0 ||
        epoll_ctl(P.epoll, EPOLL_CTL_ADD, P.control.fd, &ev) < 0) {
        say("ERROR", "relay: no control pair: %s", strerror(errno));
        return 1;
    }
    P.running = 1;
    struct epoll_event events[64];
    while (P.running) {
        /* Nothing to time out: sleep until something happens (the daemon's end too). */
        int n = epoll_wait(P.epoll, events, 64,
                           setting_up() || P.listener_paused ? 1000 : -1);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            struct end *end = events[i].data.ptr;
            if (end->kind == K_CONTROL)
                control();
            else if (end->kind == K_LISTENER)
                accept_all();
            else if (end->relay->state != CLOSED)
                ready(end->relay, end, events[i].events);
        }
        expire();
        if (P.listener_paused && (n_closed > 0 || n == 0)) {  /* a descriptor came free */
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &P.listener};
            if (epoll_ctl(P.epoll, EPOLL_CTL_ADD, P.listener.fd, &ev) == 0)
                P.listener_paused = 0;
        }
        for (int i = 0; i < n_closed; i++)
            free(closed_relays[i]);
        n_closed = 0;
    }
    while (P.relays)
        close_relay(P.relays);
    return 0;
}
