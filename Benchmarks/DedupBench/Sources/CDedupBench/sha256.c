#include "dedup_bench.h"
#include <openssl/evp.h>

int dedup_bench_sha256(const void *data, size_t length, uint8_t *digest) {
    unsigned int size = 0;
    return EVP_Digest(data, length, digest, &size, EVP_sha256(), NULL);
}
