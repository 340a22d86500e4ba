// Little-endian load/store helpers for the archive's on-disk integers (memcpy: no alignment
// assumptions). ferry builds only on little-endian hosts; see the static_assert.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace ferry::pipeline {

static_assert(std::endian::native == std::endian::little, "ferry's archive code assumes little-endian");

inline void PutLe16(char* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void PutLe32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void PutLe64(char* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline uint16_t GetLe16(const char* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline uint32_t GetLe32(const char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t GetLe64(const char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

// Big-endian (network order), for the PostgreSQL wire protocol.
inline uint64_t GetBe64(const char* p) { uint64_t v; std::memcpy(&v, p, 8); return __builtin_bswap64(v); }
inline uint32_t GetBe32(const char* p) { uint32_t v; std::memcpy(&v, p, 4); return __builtin_bswap32(v); }
inline void PutBe64(char* p, uint64_t v) { v = __builtin_bswap64(v); std::memcpy(p, &v, 8); }

}  // namespace ferry::pipeline
