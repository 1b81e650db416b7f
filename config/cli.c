/* `pirec config check|get|set|defaults|reference`. Exit codes follow sysexits.h. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define EX_OK      0
#define EX_USAGE   64
#define EX_DATAERR 65
#define EX_NOINPUT 66
#define EX_IOERR   74

static const char usage_text[] =
    "usage: pirec config check FILE             validate FILE, listing every problem\n"
    "       pirec config get FILE SECTION.KEY    print a value (the default when not set)\n"
    "       pirec config set FILE SECTION.KEY VALUE [SECTION.KEY VALUE...]\n"
    "                                            change values, keeping comments and layout\n"
    "       pirec config defaults                print a commented config with every key\n"
    "       pirec config reference               print the key reference (Markdown)\n"
    "exit status: 0 ok, 64 usage, 65 invalid config or value, 66 cannot open FILE, 74 I/O error\n";

static int usage(const char *why)
{
  if (why)
    fprintf(stderr, "pirec config: %s\n", why);
  fputs(usage_text, stderr);
  return EX_USAGE;
}

static void print_errors(const struct pirec_config_errors *errors)
{
  for (size_t i = 0; i < errors->count; i++)
    fprintf(stderr, "%s\n", errors->items[i].message);
}

/* File problems map to 66 when the file cannot be opened, 74 otherwise. */
static int file_status(int r)
{
  if (r == -EINVAL)
    return EX_DATAERR;
  if (r == -ENOENT || r == -EACCES || r == -EISDIR || r == -ENOTDIR || r == -EPERM)
    return EX_NOINPUT;
  if (r == -EFBIG)
    return EX_DATAERR;
  return EX_IOERR;
}

static int print_text(char *text)
{
  if (!text) {
    fprintf(stderr, "pirec config: out of memory\n");
    return EX_IOERR;
  }
  fputs(text, stdout);
  free(text);
  return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}

static int cmd_check(const char *path)
{
  struct pirec_config *cfg;
  struct pirec_config_errors errors = {0};
  int r = pirec_config_load(path, &cfg, &errors);
  print_errors(&errors);
  pirec_config_errors_free(&errors);
  if (r < 0) {
    if (r == -EINVAL)
      fprintf(stderr, "%s: invalid\n", path);
    return file_status(r);
  }
  printf("%s: ok (%zu camera, %zu gpio sections)\n", path, pirec_config_instance_count(cfg, "camera"),
         pirec_config_instance_count(cfg, "gpio"));
  pirec_config_free(cfg);
  return EX_OK;
}

static int cmd_get(const char *path, const char *key)
{
  struct pirec_config *cfg;
  struct pirec_config_errors errors = {0};
  int r = pirec_config_load(path, &cfg, &errors);
  print_errors(&errors);
  pirec_config_errors_free(&errors);
  if (r < 0)
    return file_status(r);
  char *text;
  r = pirec_config_get_text(cfg, key, &text);
  pirec_config_free(cfg);
  if (r == -ENOENT) {
    /* Reuse the set path's schema check for a helpful message (did you mean ...). */
    struct pirec_config_assignment a = {key, ""};
    char *out;
    pirec_config_edit_text("", 0, path, &a, 1, &out, NULL, &errors);
    free(out);
    if (errors.count)
      fprintf(stderr, "pirec config: %s: %s\n", key,
              strstr(errors.items[0].message, "': ") ? strstr(errors.items[0].message, "': ") + 3
                                                     : "unknown key");
    else
      fprintf(stderr, "pirec config: unknown key '%s'\n", key);
    pirec_config_errors_free(&errors);
    return EX_USAGE;
  }
  if (r < 0)
    return EX_IOERR;
  printf("%s\n", text);
  free(text);
  return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}

static int cmd_set(const char *path, int pairs, char **argv)
{
  struct pirec_config_assignment *a = calloc((size_t)pairs, sizeof(*a));
  if (!a)
    return EX_IOERR;
  for (int i = 0; i < pairs; i++) {
    a[i].key = argv[2 * i];
    a[i].value = argv[2 * i + 1];
  }
  struct pirec_config_errors errors = {0};
  int r = pirec_config_set(path, a, (size_t)pairs, &errors);
  free(a);
  print_errors(&errors);
  pirec_config_errors_free(&errors);
  if (r < 0)
    return file_status(r);
  return EX_OK;
}

int pirec_config_main(int argc, char **argv)
{
  if (argc < 2)
    return usage("missing subcommand");
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_text, stdout);
    return EX_OK;
  }
  if (strcmp(cmd, "check") == 0) {
    if (argc != 3)
      return usage("check takes one FILE");
    return cmd_check(argv[2]);
  }
  if (strcmp(cmd, "get") == 0) {
    if (argc != 4)
      return usage("get takes FILE SECTION.KEY");
    return cmd_get(argv[2], argv[3]);
  }
  if (strcmp(cmd, "set") == 0) {
    if (argc < 5 || (argc - 3) % 2 != 0)
      return usage("set takes FILE and one or more SECTION.KEY VALUE pairs");
    return cmd_set(argv[2], (argc - 3) / 2, argv + 3);
  }
  if (strcmp(cmd, "defaults") == 0) {
    if (argc != 2)
      return usage("defaults takes no arguments");
    return print_text(pirec_config_defaults_text());
  }
  if (strcmp(cmd, "reference") == 0) {
    if (argc != 2)
      return usage("reference takes no arguments");
    return print_text(pirec_config_reference_markdown());
  }
  char why[256];
  snprintf(why, sizeof(why), "unknown subcommand '%s'", cmd);
  return usage(why);
}
