/* pirec: dispatches `pirec COMMAND ...` to the module that implements COMMAND. Add a command by
 * adding a row to the table; keep option parsing inside the command's own main. */

#include <stdio.h>
#include <string.h>

#include "pirec/config.h"
#include "pirec/controller.h"
#include "pirec/storage.h"

#define EX_USAGE 64

struct command {
  const char *name;
  int (*main)(int argc, char **argv); /* argv[0] is the command name */
  const char *help;
};

static const struct command commands[] = {
    {"config", pirec_config_main, "check, get, set or print the configuration (pirec config --help)"},
    {"record", pirec_controller_record_main,
     "run the recorders: sessions, trials, control socket (pirec record --help)"},
    {"status", pirec_controller_client_main, "show what the running recorder is doing (--json)"},
    {"start", pirec_controller_client_main, "start a session (--label L)"},
    {"stop", pirec_controller_client_main, "stop the session; every file final"},
    {"trial", pirec_controller_client_main, "start the next trial (--label L)"},
    {"note", pirec_controller_client_main, "add a timestamped note: pirec note TEXT"},
    {"reload", pirec_controller_client_main, "reload the config file (applies from the next session)"},
    {"fleet", pirec_controller_fleet_main,
     "the same command on every pirec of a group, over MQTT (pirec fleet --help)"},
    {"keys", pirec_storage_keys_main, "make the lab's key pair for encrypted sessions: pirec keys new"},
    {"decrypt", pirec_storage_decrypt_main, "decrypt a session: pirec decrypt SESSION --key FILE"},
    {"archive", pirec_storage_archive_main, "a session as .tar.zst with SHA-256 manifest (--verify FILE)"},
};

static void usage(FILE *out)
{
  fprintf(out, "usage: pirec COMMAND [ARGS...]\n       pirec -h|--help|--version\ncommands:\n");
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    usage(stderr);
    return EX_USAGE;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("pirec %s\n", PIREC_VERSION);
    return 0;
  }
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
    if (strcmp(argv[1], commands[i].name) == 0)
      return commands[i].main(argc - 1, argv + 1);
  fprintf(stderr, "pirec: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return EX_USAGE;
}
