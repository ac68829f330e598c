// CMemxShims: only what Swift cannot import directly from Glibc.
// Every symbol is prefixed memx_ and carries a one-line reason for existing. No policy lives here.
#ifndef MEMX_SHIMS_H
#define MEMX_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/file.h>

/// Most file descriptors one vhost-user message may carry (VHOST_MEMORY_BASELINE_NREGIONS).
#define MEMX_MAX_MESSAGE_FDS 8

/// sendmsg with SCM_RIGHTS: CMSG_* are macros Swift cannot call. MSG_NOSIGNAL, no SIGPIPE.
/// Returns bytes sent or -1 with errno set.
ssize_t memx_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// recvmsg with room for MEMX_MAX_MESSAGE_FDS descriptors (MSG_CMSG_CLOEXEC). Received fds are
/// written to fds[0..*nfds). If the control data was truncated every received fd is closed and
/// -1 is returned with errno = EMSGSIZE. Returns bytes received (0 = EOF) or -1 with errno.
ssize_t memx_recv_with_fds(int sock, void *buf, size_t len, int *fds, int *nfds);

/// Most datagrams one memx_udp_*_batch call moves (a window's worth of page parts).
#define MEMX_UDP_BATCH_MAX 64

/// recvmmsg (declared only under _GNU_SOURCE): receives up to `count` (≤ MEMX_UDP_BATCH_MAX)
/// datagrams, blocking for the first only (MSG_WAITFORONE; not at all with `dont_wait`), datagram i into buffers[i] (each
/// `capacity` bytes); lengths[i] and, if `peers` is not NULL, the sender into peers[i] (each
/// `peer_capacity` bytes, a sockaddr_storage) and peer_lengths[i]. Returns the number received
/// or -1 with errno.
int memx_udp_receive_batch(int sock, void *const *buffers, size_t capacity, unsigned count, size_t *lengths,
                           void *peers, size_t peer_capacity, unsigned *peer_lengths, int dont_wait);

/// sendmmsg (declared only under _GNU_SOURCE): sends `count` (≤ MEMX_UDP_BATCH_MAX) datagrams,
/// datagram i made of heads[i] (head_lengths[i] bytes) then bodies[i] (body_lengths[i] bytes, may
/// be 0), to peers[i] of peer_lengths[i] bytes (peers NULL: a connected socket). MSG_NOSIGNAL.
/// Returns how many were sent (retrying after EINTR) or -1 with errno.
int memx_udp_send_batch(int sock, const void *const *heads, const size_t *head_lengths, const void *const *bodies,
                        const size_t *body_lengths, const void *peers, size_t peer_stride, const unsigned *peer_lengths,
                        unsigned count);

/// memfd_create: glibc declares it only under _GNU_SOURCE.
int memx_memfd_create(const char *name, unsigned int flags);
/// MFD_* and F_SEAL_* flag values (macros in linux headers that are not always imported).
unsigned int memx_mfd_cloexec(void);
unsigned int memx_mfd_allow_sealing(void);

/// fallocate modes for giving pool memory back (FALLOC_FL_* are macros behind _GNU_SOURCE).
int memx_punch_hole(int fd, off_t offset, off_t length);

// Atomic access to memory shared with the guest (virtio rings, dirty log, inflight region).
// The C11 builtins give the exact orderings virtio-queue uses; see GuestMemory/RingAccess.swift.
uint16_t memx_load_acquire_u16(const void *p);
void memx_store_release_u16(void *p, uint16_t v);
void memx_store_relaxed_u16(void *p, uint16_t v);
uint16_t memx_load_relaxed_u16(const void *p);
void memx_fence_seq_cst(void);
void memx_fence_acquire(void);
void memx_fence_release(void);
/// Dirty-log bit set: QEMU clears the log concurrently with xchg, so this must be an atomic OR.
void memx_atomic_or_u8(void *p, uint8_t bits);

/// accept4 with SOCK_CLOEXEC: accept4 is a GNU extension.
int memx_accept_cloexec(int sock);

/// Thread naming for ps/top (pthread_setname_np is a GNU extension).
void memx_set_thread_name(const char *name);

/// Bytes of an HMAC-SHA256 tag.
#define MEMX_HMAC_SHA256_BYTES 32

/// HMAC-SHA256 of data under key, written to out[0..32): the wire protocol's AUTH proofs
/// (libcrypto's HMAC; its headers stay out of this header so Swift never imports OpenSSL).
/// Returns 0, or -1 if libcrypto failed or keylen is over INT_MAX.
int memx_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, uint8_t *out);

/// Constant-time comparison of len bytes (libcrypto's CRYPTO_memcmp): a MAC check must not
/// tell an attacker how many leading bytes were right. Returns 1 if equal, 0 otherwise.
int memx_constant_time_equal(const void *a, const void *b, size_t len);

#endif
