// The ferry binary: parses the command line and runs one subcommand (tools/cmd_*.cc).
#include "tools/cli.h"

int main(int argc, char** argv) { return ferry::tools::RunCli(argc, argv); }
