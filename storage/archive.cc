#include "storage/archive.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pipeline/check.h"
#include "storage/durable_file_internal.h"
#include "storage/segment_format.h"

namespace ferry::storage {
namespace {

constexpr char kVersionFile[] = "FERRY-ARCHIVE";
constexpr char kIdentityFile[] = "SOURCE";
constexpr char kEncryptedFile[] = "ENCRYPTED";

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> ListDirs(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name[0] != '.' && IsDir(path + "/" + name)) names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

absl::Status ValidateSourceName(absl::string_view name) {
  bool ok = !name.empty() && name.size() <= 64;
  for (char c : name) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad source name \"", name, "\": use 1 to 64 letters, digits, '_' or '-'"));
  }
  return absl::OkStatus();
}

namespace {

// An archive is private unless its directory has group access (durable_file.h,
// SetArchiveGroupAccess): as PostgreSQL does with its data directory, the directory's mode
// decides, and a new archive directory is made private. Every open applies it, read-only ones
// too: `backup`, `mark` and `drill` write snapshots, marks and reports beside a running
// service through a read-only archive, and must create what it would.
absl::Status ApplyArchiveMode(const std::string& path, bool create) {
  if (create && mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("create archive directory", path, errno);
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (!create && errno == ENOENT) return absl::OkStatus();  // reported as "no ferry archive"
    return ErrnoStatus("stat", path, errno);
  }
  SetArchiveGroupAccess((st.st_mode & 0050) == 0050);
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckKeys(const std::string& archive, const pipeline::Keyring* keys, bool writing) {
  const std::string marker_path = absl::StrCat(archive, "/", kEncryptedFile);
  auto marker = ReadWholeFile(marker_path);
  if (!marker.ok() && !absl::IsNotFound(marker.status())) return marker.status();
  if (!marker.ok() && (!writing || keys == nullptr)) return absl::OkStatus();  // not encrypted (yet)
  if (marker.ok() && keys == nullptr) {
    if (!writing) return absl::OkStatus();  // reading: each sealed frame says what it lacks
    return absl::FailedPreconditionError(absl::StrCat(
        "archive ", archive, " is encrypted (", kEncryptedFile, ") and this process has no key: set [archive] "
        "encryption_key_file to its key file"));
  }
  // "key <id> <check value>" lines: a key file whose key of some id is not the one the archive
  // was sealed with would make what it writes unreadable with the right file, and the reverse.
  std::map<uint16_t, std::string> known;
  for (absl::string_view line : absl::StrSplit(marker.value_or(""), '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    uint32_t id = 0;
    if (f.size() == 3 && f[0] == "key" && absl::SimpleAtoi(f[1], &id) && id > 0 && id <= 65535) {
      known[static_cast<uint16_t>(id)] = std::string(f[2]);
    }
  }
  bool add = false;
  for (uint16_t id : keys->ids()) {
    auto it = known.find(id);
    if (it == known.end()) {
      add = true;
    } else if (it->second != keys->CheckValue(id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "key ", id, " in ", keys->origin(), " is not the key ", id, " archive ", archive,
          " was sealed with (", kEncryptedFile, " records another): use the key file the archive was written with"));
    }
  }
  if (!writing || (!add && marker.ok())) return absl::OkStatus();
  std::string text = "aes-256-gcm\n";
  for (uint16_t id : keys->ids()) known[id] = keys->CheckValue(id);
  for (const auto& [id, check] : known) absl::StrAppend(&text, "key ", id, " ", check, "\n");
  return WriteFileAtomically(archive, kEncryptedFile, text);
}

absl::StatusOr<std::unique_ptr<Archive>> Archive::Open(const std::string& path,
                                                       const ArchiveOptions& options) {
  FERRY_RETURN_IF_ERROR(ApplyArchiveMode(path, options.writable));
  std::unique_ptr<Archive> a(new Archive(path, options));
  const std::string version_path = absl::StrCat(path, "/", kVersionFile);
  auto version = ReadWholeFile(version_path);
  if (!version.ok()) {
    if (!absl::IsNotFound(version.status()) || !options.writable) {
      if (absl::IsNotFound(version.status())) {
        return absl::NotFoundError(absl::StrCat(
            "no ferry archive at ", path, ": check --archive (or [archive] path in the config)"));
      }
      return version.status();
    }
    FERRY_RETURN_IF_ERROR(CreateDirectory(path));
    FERRY_RETURN_IF_ERROR(WriteFileAtomically(path, kVersionFile,
                                              absl::StrCat("ferry archive ", kArchiveVersion, "\n")));
  } else if (absl::StripSuffix(*version, "\n") != absl::StrCat("ferry archive ", kArchiveVersion)) {
    return absl::FailedPreconditionError(absl::StrCat(
        version_path, " says \"", absl::StripSuffix(*version, "\n"),
        "\": this ferry reads \"ferry archive ", kArchiveVersion, "\""));
  }
  if (options.writable) {
    const std::string lock_path = path + "/LOCK";
    FERRY_ASSIGN_OR_RETURN(a->lock_fd_, OpenForWrite(lock_path, true));
    if (flock(a->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "archive ", path, " is locked by another ferry process: stop it or use another archive"));
    }
    const std::string pid = absl::StrCat(getpid(), "\n");
    if (ftruncate(a->lock_fd_, 0) != 0 || pwrite(a->lock_fd_, pid.data(), pid.size(), 0) < 0) {
      return ErrnoStatus("write", lock_path, errno);
    }
    FERRY_RETURN_IF_ERROR(CreateDirectory(path + "/streams"));
  }
  FERRY_RETURN_IF_ERROR(CheckKeys(path, options.keys.get(), options.writable));
  return a;
}

Archive::~Archive() {
  streams_.clear();
  if (lock_fd_ >= 0) close(lock_fd_);
}

std::string Archive::SourceDir(absl::string_view source) const {
  return absl::StrCat(path_, "/streams/", source);
}

absl::StatusOr<StreamLog*> Archive::Stream(absl::string_view source, pipeline::StreamKind kind) {
  FERRY_RETURN_IF_ERROR(ValidateSourceName(source));
  const std::string key = absl::StrCat(source, "/", pipeline::StreamKindName(kind));
  auto it = streams_.find(key);
  if (it != streams_.end()) return it->second.get();
  const std::string dir = absl::StrCat(SourceDir(source), "/", pipeline::StreamKindName(kind));
  if (!options_.writable && !IsDir(dir)) {
    return absl::NotFoundError(absl::StrCat("archive ", path_, " has no stream ",
                                            pipeline::StreamKindName(kind), " for source \"",
                                            source, "\"; ferry ls lists what it has"));
  }
  StreamLogOptions o;
  o.writer = options_.writer;
  o.segment_bytes = options_.segment_bytes;
  o.read_only = !options_.writable;
  o.survey = options_.survey && !options_.writable;
  o.keys = options_.keys;
  FERRY_ASSIGN_OR_RETURN(auto log, StreamLog::Open(dir, kind, o));
  StreamLog* raw = log.get();
  streams_[key] = std::move(log);
  return raw;
}

std::vector<std::string> Archive::Sources() const { return ListDirs(path_ + "/streams"); }

std::vector<pipeline::StreamKind> Archive::Streams(absl::string_view source) const {
  std::vector<pipeline::StreamKind> kinds;
  for (const std::string& name : ListDirs(SourceDir(source))) {
    auto kind = pipeline::ParseStreamKind(name);
    if (kind.ok()) kinds.push_back(*kind);
  }
  return kinds;
}

absl::StatusOr<SourceIdentity> Archive::GetIdentity(absl::string_view source) const {
  FERRY_ASSIGN_OR_RETURN(std::string text,
                         ReadWholeFile(absl::StrCat(SourceDir(source), "/", kIdentityFile)));
  SourceIdentity id;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    id[kv.first] = kv.second;
  }
  return id;
}

absl::Status Archive::SetIdentity(absl::string_view source, const SourceIdentity& identity) {
  FERRY_CHECK(options_.writable);
  FERRY_RETURN_IF_ERROR(ValidateSourceName(source));
  const std::string dir = SourceDir(source);
  FERRY_RETURN_IF_ERROR(CreateDirectory(dir));
  std::string text;
  for (const auto& [k, v] : identity) absl::StrAppend(&text, k, "=", v, "\n");
  return WriteFileAtomically(dir, kIdentityFile, text);
}

}  // namespace ferry::storage
