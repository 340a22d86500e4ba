// A test hook under both DurableFile writers: every result of a write, fdatasync or truncate
// the writers get from the kernel passes through the installed FaultInjector, which may turn it
// into an error or a short write. Production code never installs one; the cost is one atomic
// load per operation. Tests use it to show the durability rules (durable_file.h) hold when the
// disk fails: nothing is acknowledged past a failed write, a failed fdatasync is fatal.
#pragma once

#include <cstdint>
#include <string>

namespace ferry::storage {

enum class IoOp { kWrite, kSync, kTruncate };

class FaultInjector {
 public:
  virtual ~FaultInjector() = default;
  // `result` is what the kernel returned: bytes written (kWrite) or 0, or -errno. Returns what
  // the writer sees instead: a negative errno, or for kWrite a count no larger than `result`
  // (a short write; the writer then writes the rest again at its offset). Called from the
  // writing thread.
  virtual int64_t OnResult(IoOp op, const std::string& path, int64_t result) = 0;
};

// Installs `injector` (nullptr removes it) for every DurableFile and SyncDirectory in the
// process. The caller keeps it alive until it is removed.
void SetFaultInjector(FaultInjector* injector);

// What the writers call with each kernel result.
int64_t InjectFault(IoOp op, const std::string& path, int64_t result);

}  // namespace ferry::storage
