// Records of the pg-changes stream: row-level change events decoded from pgoutput, grouped by
// transaction. Each record is self-contained (it carries the relations its events use), so a
// reader can start at any transaction. Byte layout: docs/archive-format.md ("pg-changes").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pipeline/frame.h"
#include "pipeline/position.h"

namespace ferry::pipeline {

// PostgreSQL's first OID for objects not built in: types below it are the same on every server
// (and pgoutput sends no Type message for them).
inline constexpr uint32_t kFirstNormalObjectId = 16384;

// One live column of a relation, as pgoutput's Relation message describes it.
struct ChangeColumn {
  std::string name;
  uint32_t type_oid = 0;
  int32_t typmod = -1;
  bool key = false;          // part of the replica identity (every column under FULL)
  bool primary_key = false;  // part of the primary key (the events' Kafka key)
  std::string type_name;  // "schema.name" for a non-builtin type (pgoutput's Type message), else ""
  bool operator==(const ChangeColumn&) const = default;
};

struct ChangeRelation {
  uint32_t relid = 0;
  std::string schema, table;
  char replica_identity = 'd';  // 'd' default, 'f' full, 'i' index, 'n' nothing
  std::vector<ChangeColumn> columns;
  bool operator==(const ChangeRelation&) const = default;
};

// A column value in PostgreSQL's text format, or NULL, or "unchanged TOAST value" (an UPDATE
// that did not touch an out-of-line value: the subscriber keeps what it has).
struct ChangeValue {
  enum class Kind : uint8_t { kNull = 'n', kUnchanged = 'u', kText = 't' };
  Kind kind = Kind::kNull;
  std::string text;
  bool operator==(const ChangeValue&) const = default;
};
using ChangeTuple = std::vector<ChangeValue>;

// Debezium's op letters; 'r' is a row read by the initial snapshot.
enum class ChangeOp : char {
  kInsert = 'c',
  kUpdate = 'u',
  kDelete = 'd',
  kRead = 'r',
  kTruncate = 't',
  kMessage = 'm',  // pg_logical_emit_message inside a transaction
};

struct ChangeEvent {
  ChangeOp op = ChangeOp::kInsert;
  uint64_t lsn = 0;       // the change's own WAL position (0 for snapshot reads)
  uint32_t relation = 0;  // index into the batch's relations (unused for messages)
  // Old row: the key columns only (others NULL) when an UPDATE changed the key under DEFAULT
  // identity, the whole row under FULL; absent otherwise. Deletes always have one.
  bool has_before = false;
  ChangeTuple before;
  bool has_after = false;
  ChangeTuple after;
  std::vector<uint32_t> truncated;  // kTruncate: relation indexes
  uint8_t truncate_options = 0;     // bit 0 CASCADE, bit 1 RESTART IDENTITY
  std::string prefix, content;      // kMessage
  bool operator==(const ChangeEvent&) const = default;
};

// One record: a transaction, or a part of one too large for a single record.
//
// Positions: the stream's position is (LSN << 16) | part. A transaction's last record ends at
// its commit end LSN << 16, the parts before it at (previous end LSN << 16) + 1, + 2, ...: so
// the synced position reaches a commit only once the whole transaction is durable, and frame
// positions stay strictly increasing (the mirror and the shipper depend on that).
struct ChangeBatch {
  enum class Kind : uint8_t { kTransaction = 1, kSnapshot = 2 };
  Kind kind = Kind::kTransaction;
  // first: a transaction (or snapshot) starts here. A reader holding parts of an unfinished one
  // drops them: the source restarted and the server sent the transaction again, whole.
  bool first = true;
  bool last = true;  // the transaction is complete with this record
  uint32_t xid = 0;
  uint64_t commit_lsn = 0;  // the commit record's LSN (snapshot: the slot's consistent point)
  uint64_t end_lsn = 0;     // the end of the commit record: what the slot may confirm
  UnixMicros commit_ts = 0;
  std::string database;
  std::vector<ChangeRelation> relations;
  std::vector<ChangeEvent> events;
  bool operator==(const ChangeBatch&) const = default;
};

inline constexpr int kChangePartBits = 16;
inline constexpr uint64_t kMaxChangeLsn = (uint64_t{1} << (64 - kChangePartBits)) - 1;
inline uint64_t ChangePosition(uint64_t lsn, uint64_t part) { return (lsn << kChangePartBits) | part; }
// A stream position as users read it, the same in every command's output: pg-wal as an LSN
// (0/1E000138), pg-changes as the commit LSN with "+part" while a transaction is open,
// redis-commands as the replication offset in decimal.
std::string FormatStreamPosition(StreamKind kind, uint64_t pos);
inline uint64_t ChangePositionLsn(uint64_t pos) { return pos >> kChangePartBits; }

std::string EncodeChangeBatch(const ChangeBatch& batch);
// kDataLoss naming what is wrong when the bytes are not a well-formed record.
absl::StatusOr<ChangeBatch> DecodeChangeBatch(absl::string_view bytes);

// Reassembles transactions from the stream's records in order: parts of one transaction are
// joined, a transaction cut off by a restart (a `first` record while one is open) is dropped.
class ChangeAssembler {
 public:
  // Returns true when *out holds a complete transaction (or snapshot) after this record.
  absl::StatusOr<bool> Add(absl::string_view record, ChangeBatch* out);
 private:
  bool open_ = false;
  ChangeBatch pending_;
};

}  // namespace ferry::pipeline
