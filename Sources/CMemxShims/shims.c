#define _GNU_SOURCE
#include "memx_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

ssize_t memx_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MEMX_MAX_MESSAGE_FDS)];
        struct cmsghdr align;
    } control;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > MEMX_MAX_MESSAGE_FDS) {
            errno = EINVAL;
            return -1;
        }
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

ssize_t memx_recv_with_fds(int sock, void *buf, size_t len, int *fds, int *nfds) {
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MEMX_MAX_MESSAGE_FDS)];
        struct cmsghdr align;
    } control;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *data = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            if (*nfds < MEMX_MAX_MESSAGE_FDS) {
                fds[(*nfds)++] = data[i];
            } else {
                close(data[i]);
            }
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        for (int i = 0; i < *nfds; i++) close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}

int memx_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
unsigned int memx_mfd_cloexec(void) { return MFD_CLOEXEC; }
unsigned int memx_mfd_allow_sealing(void) { return MFD_ALLOW_SEALING; }

int memx_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

uint16_t memx_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
void memx_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
void memx_store_relaxed_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
uint16_t memx_load_relaxed_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
void memx_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void memx_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
void memx_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
void memx_atomic_or_u8(void *p, uint8_t bits) { __atomic_fetch_or((uint8_t *)p, bits, __ATOMIC_RELAXED); }

void memx_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

int memx_accept_cloexec(int sock) { return accept4(sock, NULL, NULL, SOCK_CLOEXEC); }

int memx_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, uint8_t *out) {
    static const uint8_t empty = 0;
    unsigned int outlen = 0;
    if (keylen > INT_MAX) return -1;
    // HMAC() treats a NULL data pointer as "no data" only in some versions; never pass NULL.
    if (HMAC(EVP_sha256(), key ? key : &empty, (int)keylen, data ? data : &empty, len, out, &outlen) == NULL) return -1;
    return outlen == MEMX_HMAC_SHA256_BYTES ? 0 : -1;
}

int memx_constant_time_equal(const void *a, const void *b, size_t len) {
    return CRYPTO_memcmp(a, b, len) == 0;
}

int memx_udp_receive_batch(int sock, void *const *buffers, size_t capacity, unsigned count, size_t *lengths,
                           void *peers, size_t peer_capacity, unsigned *peer_lengths, int dont_wait) {
    if (count > MEMX_UDP_BATCH_MAX) count = MEMX_UDP_BATCH_MAX;
    struct mmsghdr messages[MEMX_UDP_BATCH_MAX];
    struct iovec vectors[MEMX_UDP_BATCH_MAX];
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = capacity;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        if (peers != NULL) {
            messages[i].msg_hdr.msg_name = (char *)peers + i * peer_capacity;
            messages[i].msg_hdr.msg_namelen = (socklen_t)peer_capacity;
        }
    }
    int n;
    do {
        n = recvmmsg(sock, messages, count, MSG_WAITFORONE | (dont_wait ? MSG_DONTWAIT : 0), NULL);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < n; i++) {
        lengths[i] = messages[i].msg_len;
        if (peers != NULL) peer_lengths[i] = messages[i].msg_hdr.msg_namelen;
    }
    return n;
}

int memx_udp_send_batch(int sock, const void *const *heads, const size_t *head_lengths, const void *const *bodies,
                        const size_t *body_lengths, const void *peers, size_t peer_stride, const unsigned *peer_lengths,
                        unsigned count) {
    if (count > MEMX_UDP_BATCH_MAX) count = MEMX_UDP_BATCH_MAX;
    struct mmsghdr messages[MEMX_UDP_BATCH_MAX];
    struct iovec vectors[MEMX_UDP_BATCH_MAX][2];
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    for (unsigned i = 0; i < count; i++) {
        vectors[i][0].iov_base = (void *)heads[i];
        vectors[i][0].iov_len = head_lengths[i];
        vectors[i][1].iov_base = (void *)bodies[i];
        vectors[i][1].iov_len = body_lengths[i];
        messages[i].msg_hdr.msg_iov = vectors[i];
        messages[i].msg_hdr.msg_iovlen = body_lengths[i] > 0 ? 2 : 1;
        if (peers != NULL) {
            messages[i].msg_hdr.msg_name = (void *)((const char *)peers + i * peer_stride);
            messages[i].msg_hdr.msg_namelen = peer_lengths[i];
        }
    }
    unsigned sent = 0;
    while (sent < count) {
        int n = sendmmsg(sock, messages + sent, count - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sent > 0 ? (int)sent : -1;
        }
        sent += (unsigned)n;
    }
    return (int)sent;
}
