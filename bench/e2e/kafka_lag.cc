// End-to-end cross-region lag benchmark: a PostgreSQL 15 primary under pgbench, ferry shipping
// its WAL through Kafka (librdkafka's mock cluster, 3 brokers, acks=all) to a mirror in the
// same run. Reports how long frames take from being closed in the primary region to being
// synced in the mirror's archive (p50/p99 over every frame), and the acknowledged-position lag
// with ack = "local+kafka". Writes kafka_lag.md and kafka_lag.csv to --out. Measures only.
//
//   build/bench/ferry_bench_kafka_lag [--seconds 20] [--clients 4] [--out bench/results]
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/e2e/harness.h"
#include "config/config.h"
#include "cross_region/mirror.h"
#include "local/local_postgres.h"
#include "pipeline/check.h"
#include "service/service.h"
#include "storage/durable_file.h"

namespace ferry::bench {
namespace {

using local::LocalPostgres;

struct Result {
  std::string ack;
  double tps = 0;
  cross_region::MirrorState mirror;
};

absl::StatusOr<Result> Run(const std::string& dir, const std::string& ack, int seconds, int clients) {
  local::LocalPostgresOptions po;
  po.base_dir = dir + "/primary";
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg, LocalPostgres::Create(po));
  const std::string archive = dir + "/archive";
  const std::string config_text = absl::StrCat(
      "region = \"bench\"\n[archive]\npath = \"", archive, "\"\n\n[kafka]\nbrokers = \"mock:3\"\n\n",
      "[[source]]\nname = \"main\"\nkind = \"postgres\"\nconninfo = \"", pg->Conninfo(), "\"\n",
      "scheduled_backups = false\nack = \"", ack, "\"\n");
  FERRY_ASSIGN_OR_RETURN(config::Config config, config::ParseConfig(config_text, dir + "/ferry.toml"));
  config.drill_every = absl::ZeroDuration();
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<service::Service> service, service::Service::Create(config));
  absl::Status service_result;
  std::thread runner([&] { service_result = service->Run(); });
  std::unique_ptr<cross_region::Mirror> mirror;
  std::thread mirror_thread;
  absl::Status mirror_result;
  Result r;
  r.ack = ack;
  absl::Status st = [&]() -> absl::Status {
    std::string bootstrap;
    for (int i = 0; i < 100 && bootstrap.empty(); ++i) {
      bootstrap = std::string(absl::StripAsciiWhitespace(storage::ReadWholeFile(archive + "/KAFKA").value_or("")));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    cross_region::MirrorOptions mo;
    mo.kafka.brokers = bootstrap;
    mo.kafka.topic_prefix = config.kafka_topic_prefix;
    mo.archive_path = dir + "/mirror";
    mo.sources = {"main"};
    mo.group_id = "bench";
    FERRY_ASSIGN_OR_RETURN(mirror, cross_region::Mirror::Create(mo));
    mirror_thread = std::thread([&] { mirror_result = mirror->Run(); });
    auto pgbench = [&](std::vector<std::string> args) -> absl::StatusOr<local::CommandResult> {
      std::vector<std::string> argv = {"pgbench", "-h", "127.0.0.1", "-p", std::to_string(pg->port()), "-U", "postgres"};
      argv.insert(argv.end(), args.begin(), args.end());
      argv.push_back("postgres");
      FERRY_ASSIGN_OR_RETURN(local::CommandResult out, pg->RunTool(argv));
      if (out.exit_code != 0) return absl::InternalError(absl::StrCat("pgbench: ", out.err));
      return out;
    };
    FERRY_RETURN_IF_ERROR(pgbench({"-i", "-s", "5", "-q"}).status());
    FERRY_ASSIGN_OR_RETURN(local::CommandResult load,
                           pgbench({"-c", absl::StrCat(clients), "-j", "2", "-T", absl::StrCat(seconds)}));
    const size_t at = load.out.find("tps = ");
    if (at != std::string::npos) r.tps = std::strtod(load.out.c_str() + at + 6, nullptr);
    // Until the mirror has every frame (its Kafka lag reaches 0 on the stream).
    for (int i = 0; i < 600; ++i) {
      r.mirror = mirror->State();
      if (!r.mirror.streams.empty() && r.mirror.streams[0].kafka_lag == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    r.mirror = mirror->State();
    return absl::OkStatus();
  }();
  if (mirror != nullptr) mirror->Stop();
  if (mirror_thread.joinable()) mirror_thread.join();
  service->Stop();
  runner.join();
  FERRY_RETURN_IF_ERROR(st);
  FERRY_RETURN_IF_ERROR(service_result);
  FERRY_RETURN_IF_ERROR(mirror_result);
  FERRY_RETURN_IF_ERROR(pg->Stop());
  return r;
}

int Main(int argc, char** argv) {
  CLI::App app{"ferry cross-region lag benchmark: primary -> Kafka (mock cluster) -> mirror"};
  int seconds = 20, clients = 4;
  std::string out = "bench/results";
  app.add_option("--seconds", seconds, "pgbench duration per run");
  app.add_option("--clients", clients, "pgbench clients");
  app.add_option("--out", out, "directory for kafka_lag.md and kafka_lag.csv");
  CLI11_PARSE(app, argc, argv);

  std::vector<Result> results;
  for (const std::string ack : {"local", "local+kafka"}) {
    const std::string dir = ScratchDir("kafka");
    std::printf("bench: ack = \"%s\": pgbench -c %d -T %d with ferry shipping to Kafka and a mirror...\n", ack.c_str(),
                clients, seconds);
    auto r = Run(dir, ack, seconds, clients);
    std::filesystem::remove_all(dir);
    if (!r.ok()) {
      std::fprintf(stderr, "bench: %s\n", std::string(r.status().message()).c_str());
      return 1;
    }
    results.push_back(*r);
  }
  std::filesystem::create_directories(out);
  std::ofstream md(out + "/kafka_lag.md");
  std::ofstream csv(out + "/kafka_lag.csv");
  md << absl::StrFormat("Cross-region lag, pgbench -c %d for %d s, %u cores (mock Kafka cluster, 3 brokers, acks=all)\n\n",
                        clients, seconds, std::thread::hardware_concurrency())
     << "| ack | pgbench TPS | frames mirrored | lag p50 s | lag p99 s |\n|---|---:|---:|---:|---:|\n";
  csv << "ack,tps,frames,lag_p50_s,lag_p99_s\n";
  for (const Result& r : results) {
    md << absl::StrFormat("| %s | %.0f | %u | %.3f | %.3f |\n", r.ack, r.tps, r.mirror.lag_samples, r.mirror.lag_p50,
                          r.mirror.lag_p99);
    csv << absl::StrFormat("%s,%.1f,%u,%.4f,%.4f\n", r.ack, r.tps, r.mirror.lag_samples, r.mirror.lag_p50,
                           r.mirror.lag_p99);
  }
  md << "\nLag: from ferry closing a frame in the primary region to the mirror having it synced in its archive.\n";
  md.close();
  std::printf("\n%s", storage::ReadWholeFile(out + "/kafka_lag.md").value_or("").c_str());
  return 0;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) { return ferry::bench::Main(argc, argv); }
