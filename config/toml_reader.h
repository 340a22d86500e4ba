// Reading the config's TOML: toml++ built for ferry (no exceptions), typed values out of one
// table with unknown keys refused (TableReader), and a check that keeps toml++ away from
// non-ASCII characters outside strings.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

// Debian's shared toml++ is built with exceptions; exceptions must not cross into ferry, so
// config/ uses the header-only, exception-free build of the same library (this header alone
// includes it).
#undef TOML_HEADER_ONLY
#undef TOML_SHARED_LIB
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ferry::config {

// Reads typed values out of one TOML table, remembering which keys were consumed so that
// anything left over is reported as unknown. Errors are kInvalidArgument naming the key:
// "<origin>: <path>.<key>: <what>".
class TableReader {
 public:
  TableReader(const toml::table& table, std::string path, absl::string_view origin)
      : table_(table), path_(std::move(path)), origin_(origin) {}

  absl::Status Error(absl::string_view key, absl::string_view what) const;
  std::string Qualified(absl::string_view key) const;
  const toml::table& table() const { return table_; }

  // Each leaves *out as it is when the key is absent.
  absl::Status String(absl::string_view key, std::string* out, bool required = false);
  absl::Status Bool(absl::string_view key, bool* out);
  absl::Status Int(absl::string_view key, int64_t lo, int64_t hi, int64_t* out);
  absl::Status Duration(absl::string_view key, absl::Duration* out);  // ParseDuration's text
  absl::Status StringList(absl::string_view key, std::vector<std::string>* out);
  // Marks a key as read by other means (a sub-table).
  void Skip(absl::string_view key) { seen_.insert(std::string(key)); }

  // kInvalidArgument naming the first key nothing read.
  absl::Status CheckUnknown() const;

 private:
  const toml::table& table_;
  std::string path_;
  std::string origin_;
  std::set<std::string> seen_;
};

// The table `name` of `root` in *out, nullptr when there is none; kInvalidArgument when it
// is not a table.
absl::Status SubTable(const toml::table& root, absl::string_view name, absl::string_view origin,
                      const toml::table** out);

// kInvalidArgument "<origin>:<line>: ..." for a non-ASCII character outside strings and
// comments, which toml++ must not see (see toml_reader.cc).
absl::Status CheckAsciiOutsideStrings(absl::string_view text, absl::string_view origin);

}  // namespace ferry::config
