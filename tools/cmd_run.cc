// ferry run: the long-running service; SIGTERM/SIGINT stop it gracefully (sync, final
// feedback, exit 0); SIGHUP reloads the config's sources.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <thread>

#include <spdlog/spdlog.h>

#include "config/config.h"
#include "service/service.h"
#include "tools/commands.h"

namespace ferry::tools {
namespace {
constexpr int kDrainSeconds = 60;
}  // namespace

int CmdRun(const std::string& config_path) {
  auto config = config::LoadConfig(config_path);
  if (!config.ok()) return Fail("run", config.status());
  // Signals go to one watcher thread, never to the streaming threads (block before spawning).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);  // used only to wake the watcher at exit
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto service = service::Service::Create(*config);
  if (!service.ok()) return Fail("run", service.status());
  std::thread watcher([&] {
    while (true) {
      int sig = 0;
      sigwait(&set, &sig);
      if (sig == SIGHUP) {
        // A config that does not load changes nothing: the service goes on as it was.
        auto next = config::LoadConfig(config_path);
        if (!next.ok()) {
          spdlog::error("event=reload_failed error=\"{}\" action=kept_running_config", std::string(next.status().message()));
          continue;
        }
        spdlog::info("event=signal signal=SIGHUP action=reload sources={}", next->sources.size());
        (*service)->Reload(*next);
        continue;
      }
      if (sig == SIGUSR1) return;  // Run has returned: nothing to drain
      spdlog::info("event=signal signal={} action=draining", sig);
      (*service)->Stop();
      // Draining is bounded: a source stuck beyond it (a hung server, a disk that never
      // frees) must not keep the process from exiting. Nothing unsynced was acknowledged.
      sigset_t usr1;
      sigemptyset(&usr1);
      sigaddset(&usr1, SIGUSR1);
      const timespec limit{kDrainSeconds, 0};
      if (sigtimedwait(&usr1, nullptr, &limit) < 0) {
        spdlog::error("event=drain_timeout seconds={} action=exit", kDrainSeconds);
        std::_Exit(1);
      }
      return;
    }
  });
  spdlog::info("event=start archive={} sources={}", config->archive_path, config->sources.size());
  absl::Status st = (*service)->Run();
  pthread_kill(watcher.native_handle(), SIGUSR1);
  watcher.join();
  if (!st.ok()) return Fail("run", st);
  spdlog::info("event=exit status=ok");
  return 0;
}

}  // namespace ferry::tools
