// Micro benchmarks of the change-event path: pgoutput decoding, the pg-changes record codec,
// and Debezium rendering, each in messages (events) per second. Measures; never pass/fail.
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "cross_region/debezium.h"
#include "ingest/pg/pgoutput.h"
#include "pipeline/change_event.h"

namespace {

using ferry::pipeline::ChangeBatch;
using ferry::pipeline::ChangeEvent;
using ferry::pipeline::ChangeValue;

// A pgbench_accounts-like Insert as pgoutput sends it: 4 text columns.
std::string InsertMessage() {
  std::string m = "I";
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) m.push_back(static_cast<char>(v >> s));
  };
  be32(16390);
  m += 'N';
  m.push_back(0);
  m.push_back(4);
  for (const std::string& v : std::vector<std::string>{"123456", "7", "-4321", std::string(84, ' ')}) {
    m += 't';
    be32(static_cast<uint32_t>(v.size()));
    m += v;
  }
  return m;
}

// One transaction of `n` such inserts, with its relation.
ChangeBatch Transaction(int n) {
  ChangeBatch b;
  b.xid = 742;
  b.commit_lsn = 0x16B3A28;
  b.end_lsn = 0x16B3A58;
  b.commit_ts = 1795514400123456;
  b.database = "postgres";
  b.relations.push_back({16390, "public", "pgbench_accounts", 'd',
                         {{"aid", 23, -1, true, true, ""},
                          {"bid", 23, -1, false, false, ""},
                          {"abalance", 23, -1, false, false, ""},
                          {"filler", 1042, 88, false, false, ""}}});
  for (int i = 0; i < n; ++i) {
    ChangeEvent e;
    e.has_after = true;
    e.after = {{ChangeValue::Kind::kText, std::to_string(i)},
               {ChangeValue::Kind::kText, "7"},
               {ChangeValue::Kind::kText, "-4321"},
               {ChangeValue::Kind::kText, std::string(84, ' ')}};
    b.events.push_back(e);
  }
  return b;
}

void BM_PgOutputDecodeInsert(benchmark::State& state) {
  const std::string msg = InsertMessage();
  for (auto _ : state) {
    auto m = ferry::ingest::pg::ParsePgOutput(msg, false);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(msg.size()));
}
BENCHMARK(BM_PgOutputDecodeInsert);

void BM_ChangeRecordRoundTrip(benchmark::State& state) {
  const ChangeBatch txn = Transaction(1000);
  for (auto _ : state) {
    auto back = ferry::pipeline::DecodeChangeBatch(ferry::pipeline::EncodeChangeBatch(txn));
    benchmark::DoNotOptimize(back);
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_ChangeRecordRoundTrip);

void BM_DebeziumRender(benchmark::State& state) {
  const ChangeBatch txn = Transaction(1000);
  const ferry::cross_region::DebeziumOptions o{"ferry.eu", "main", true};
  std::vector<ferry::cross_region::KafkaRecord> out;
  for (auto _ : state) {
    out.clear();
    ferry::cross_region::RenderDebezium(txn, o, 1795514400130, &out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_DebeziumRender);

}  // namespace
