#ifndef DEDUP_BENCH_H
#define DEDUP_BENCH_H
#include <stddef.h>
#include <stdint.h>

/// SHA-256 of `length` bytes at `data` into `digest` (32 bytes), with libcrypto's EVP one-shot
/// digest; returns 1 on success. Only the hash benchmark calls it.
int dedup_bench_sha256(const void *data, size_t length, uint8_t *digest);

#endif
