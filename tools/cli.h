// The command-line contract of docs/design.md: one function per subcommand, wired by RunCli.
#pragma once

namespace ferry::tools {

// Parses argv and runs the subcommand. Exit codes: 0 ok, 1 failure, 2 usage.
int RunCli(int argc, char** argv);

}  // namespace ferry::tools
