#include "service/outflow.h"

#include <spdlog/spdlog.h>

namespace ferry::service {
namespace {

pipeline::BatcherOptions BatcherOptionsFor(const OutflowContext& context, const std::string& name,
                                           pipeline::StreamKind kind) {
  pipeline::BatcherOptions bo;
  bo.zstd_level = context.zstd_level;
  bo.keys = context.keys;
  bo.hold = [guard = context.disk_guard] { return guard->Low(); };
  bo.on_disk_full = [name, kind](const absl::Status& st) {
    if (st.ok()) {
      spdlog::info("source={} stream={} event=disk_writable action=resumed", name,
                   std::string(pipeline::StreamKindName(kind)));
    } else {
      spdlog::error("source={} stream={} event=disk_full error=\"{}\" action=holding_writes_and_acks retry_every=1s",
                    name, std::string(pipeline::StreamKindName(kind)), std::string(st.message()));
    }
  };
  return bo;
}

}  // namespace

Outflow::Outflow(const OutflowContext& context, SourceRunner* runner, storage::StreamLog* log,
                 pipeline::StreamKind kind)
    : runner_(runner), link_(std::make_shared<std::atomic<cross_region::StreamShipper*>>(nullptr)) {
  const config::SourceConfig& sc = *runner->config;
  pipeline::BatcherOptions bo = BatcherOptionsFor(context, sc.name, kind);
  bo.on_synced = [link = link_] {
    if (cross_region::StreamShipper* s = link->load()) s->Notify();
  };
  batcher_ = std::make_unique<pipeline::Batcher>(log, sc.ack, bo);
  if (!log->empty()) {
    const auto& last = log->frames().back().header;
    batcher_->Resume({last.epoch, last.end_pos});
  }
  if (!context.kafka.brokers.empty()) {
    cross_region::StreamShipperOptions so;
    so.kafka = context.kafka;
    so.archive_path = context.archive_path;
    so.source = sc.name;
    so.kind = kind;
    so.progress = &batcher_->progress();
    so.tombstones = context.kafka_tombstones;
    shipper_ = std::make_unique<cross_region::StreamShipper>(so);
    shipper_->Start();
    link_->store(shipper_.get());
  }
  absl::MutexLock lock(&runner_->mu);
  runner_->batcher = batcher_.get();
  runner_->shipper = shipper_.get();
  batcher_->SetCommitDelay(runner_->commit_delay);  // under mu: RunCommitDelayWatch sees this batcher
}

Outflow::~Outflow() {
  (void)Stop();
  absl::MutexLock lock(&runner_->mu);
  runner_->batcher = nullptr;
  runner_->shipper = nullptr;
}

absl::Status Outflow::Stop() {
  absl::Status st = batcher_->Stop();
  if (shipper_ != nullptr) shipper_->Stop();
  return st;
}

}  // namespace ferry::service
