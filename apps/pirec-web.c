/* pirec-web: the operator's console in a browser and the HTTP API (docs/HTTP.md). Option parsing,
 * the config and signals only; the server is web/ (include/pirec/web.h). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "pirec/config.h"
#include "pirec/controller.h"
#include "pirec/error.h"
#include "pirec/web.h"

#define EXIT_USAGE  64
#define EXIT_CONFIG 78

static void usage(FILE *f)
{
  fputs("usage: pirec-web [options]      serve the console and the HTTP API\n"
        "       pirec-web --url [options]  print the console's address (with its token)\n"
        "  -c, --config FILE     pirec's config ([web], [session] output_dir, [control] socket)\n"
        "  --listen ADDR         address to listen on (default [web] listen, 127.0.0.1)\n"
        "  --port N              TCP port (default [web] port, 8380; 0: any free port)\n"
        "  --socket PATH         the controller's control socket\n"
        "  --data-dir DIR        the sessions directory (default [session] output_dir)\n"
        "  --static DIR          the page's files (default " PIREC_WEB_STATIC_DIR ")\n"
        "  --token-file FILE     the access token (default [web] token_file)\n"
        "  --url                 print the URL to open, with the token when one is needed\n"
        "  --hash-password       read a password (one line) on stdin, print its hash for\n"
        "                        [web] password_hash\n"
        "  -q, --quiet           log errors only\n"
        "  -h, --help            this text;  --version   the version\n"
        "Exit status: 0 stopped by SIGINT/SIGTERM, 1 cannot serve, 64 usage, 78 bad config.\n",
        f);
}

struct args {
  const char *config, *listen, *socket, *data_dir, *static_dir, *token_file;
  int port, url, quiet, hash;
};

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct args *a)
{
  enum { O_LISTEN = 256, O_PORT, O_SOCKET, O_DATA, O_STATIC, O_TOKEN, O_URL, O_HASH, O_VERSION };
  static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                           {"listen", required_argument, NULL, O_LISTEN},
                                           {"port", required_argument, NULL, O_PORT},
                                           {"socket", required_argument, NULL, O_SOCKET},
                                           {"data-dir", required_argument, NULL, O_DATA},
                                           {"static", required_argument, NULL, O_STATIC},
                                           {"token-file", required_argument, NULL, O_TOKEN},
                                           {"url", no_argument, NULL, O_URL},
                                           {"hash-password", no_argument, NULL, O_HASH},
                                           {"quiet", no_argument, NULL, 'q'},
                                           {"help", no_argument, NULL, 'h'},
                                           {"version", no_argument, NULL, O_VERSION},
                                           {NULL, 0, NULL, 0}};
  memset(a, 0, sizeof *a);
  a->port = -1;
  int opt;
  char *end;
  while ((opt = getopt_long(argc, argv, "c:qh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c': a->config = optarg; break;
    case O_LISTEN: a->listen = optarg; break;
    case O_PORT:
      a->port = (int)strtol(optarg, &end, 10);
      if (*end || a->port < 0 || a->port > 65535) {
        fprintf(stderr, "pirec-web: --port '%s': expected 0 to 65535\n", optarg);
        return EXIT_USAGE;
      }
      break;
    case O_SOCKET: a->socket = optarg; break;
    case O_DATA: a->data_dir = optarg; break;
    case O_STATIC: a->static_dir = optarg; break;
    case O_TOKEN: a->token_file = optarg; break;
    case O_URL: a->url = 1; break;
    case O_HASH: a->hash = 1; break;
    case 'q': a->quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION: printf("pirec-web %s\n", PIREC_VERSION); return 0;
    default: usage(stderr); return EXIT_USAGE;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "pirec-web: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return EXIT_USAGE;
  }
  return -1;
}

/* --hash-password: the first line of stdin, without its newline; the hash on stdout. */
static int hash_password(void)
{
  char pw[300], hash[128];
  if (!fgets(pw, sizeof pw, stdin) || strlen(pw) > 257) {
    fputs("pirec-web: --hash-password reads the password (1 to 256 bytes) as one line on stdin\n", stderr);
    return EXIT_USAGE;
  }
  pw[strcspn(pw, "\r\n")] = '\0';
  if (!*pw) {
    fputs("pirec-web: the password is empty\n", stderr);
    return EXIT_USAGE;
  }
  int err = pirec_web_password_hash(pw, hash, sizeof hash);
  memset(pw, 0, sizeof pw);
  if (err < 0) {
    fprintf(stderr, "pirec-web: cannot hash the password: %s\n", pirec_strerror(err));
    return 1;
  }
  printf("%s\n", hash);
  return 0;
}

static int load_config(const char *path, struct pirec_config **cfg)
{
  if (!path)
    return pirec_config_new_defaults(cfg);
  struct pirec_config_errors errors = {0};
  int err = pirec_config_load(path, cfg, &errors);
  for (size_t i = 0; i < errors.count; i++)
    fprintf(stderr, "%s\n", errors.items[i].message);
  pirec_config_errors_free(&errors);
  return err;
}

/* The page's files: the source tree's when this is the build tree's binary, else the installed. */
static const char *static_dir(const char *given)
{
  static char exe[PATH_MAX];
  if (given)
    return given;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash && (*slash = '\0', strcmp(exe, PIREC_WEB_BUILD_APPS_DIR) == 0))
      return PIREC_WEB_SOURCE_STATIC_DIR;
  }
  return PIREC_WEB_STATIC_DIR;
}

static int is_loopback(const char *addr)
{
  return strcmp(addr, "127.0.0.1") == 0 || strcmp(addr, "::1") == 0;
}

struct app {
  struct pirec_web *web;
  uv_signal_t sigint, sigterm;
};

static void on_signal(uv_signal_t *s, int signum)
{
  struct app *app = s->data;
  pirec_web_close(app->web);
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
}

static void print_url(const struct pirec_web_settings *s, int port, FILE *f)
{
  char host[256] = "127.0.0.1";
  if (!is_loopback(s->listen) && gethostname(host, sizeof host) < 0)
    snprintf(host, sizeof host, "%s", s->listen);
  if (strchr(s->listen, ':') && is_loopback(s->listen))
    snprintf(host, sizeof host, "[::1]");
  fprintf(f, "%s://%s:%d/%s%s\n", s->tls_cert ? "https" : "http", host, port, s->token ? "?token=" : "",
          s->token ? s->token : "");
  fflush(f);
}

static int serve(struct pirec_web_settings *s)
{
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct app app = {0};
  int err = pirec_web_new(&loop, s, &app.web);
  if (err < 0) {
    fprintf(stderr, "pirec-web: cannot serve on %s:%d: %s\n", s->listen, s->port,
            err == -EINVAL ? "a token is needed beyond 127.0.0.1, TLS needs both tls_cert and tls_key, and "
                             "password_hash must be a hash from --hash-password"
            : err == -EIO  ? "libwebsockets could not listen (the port is in use, or libwebsockets-evlib-uv "
                             "is not installed: see its message above)"
                           : pirec_strerror(err));
    uv_loop_close(&loop);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  uv_signal_init(&loop, &app.sigint);
  uv_signal_init(&loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  fprintf(stdout, "pirec-web: console at ");
  print_url(s, pirec_web_port(app.web), stdout);
  uv_run(&loop, UV_RUN_DEFAULT);
  pirec_web_free(app.web);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "pirec-web: handles left open at exit\n");
  return 0;
}

int main(int argc, char **argv)
{
  struct args a;
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0)
    return rc;
  if (a.hash)
    return hash_password();
  struct pirec_config *cfg = NULL;
  if (load_config(a.config, &cfg) < 0)
    return EXIT_CONFIG;
  struct pirec_web_settings s;
  pirec_web_settings_default(&s);
  s.listen = a.listen ? a.listen : pirec_config_get_string(cfg, "web", "listen");
  s.port = a.port >= 0 ? a.port : (int)pirec_config_get_int(cfg, "web", "port");
  s.data_dir = a.data_dir ? a.data_dir : pirec_config_get_string(cfg, "session", "output_dir");
  s.static_dir = static_dir(a.static_dir);
  s.max_clients = (int)pirec_config_get_int(cfg, "web", "max_clients");
  s.tls_cert = pirec_config_get_string(cfg, "web", "tls_cert");
  s.tls_key = pirec_config_get_string(cfg, "web", "tls_key");
  s.tls_cert = *s.tls_cert ? s.tls_cert : NULL;
  s.password_hash = pirec_config_get_string(cfg, "web", "password_hash");
  s.password_hash = *s.password_hash ? s.password_hash : NULL;
  s.quiet = a.quiet;
  char sock[108];
  if (a.socket)
    snprintf(sock, sizeof sock, "%s", a.socket);
  else
    pirec_controller_socket_default(a.config, sock, sizeof sock);
  s.socket_path = sock;
  char token[256] = "";
  const char *token_file = a.token_file ? a.token_file : pirec_config_get_string(cfg, "web", "token_file");
  if (!is_loopback(s.listen) || pirec_config_get_bool(cfg, "web", "require_token")) {
    int err = pirec_web_token_load(token_file, !a.url, token, sizeof token);
    if (err < 0) {
      fprintf(stderr, "pirec-web: cannot use the token file '%s': %s\n", token_file,
              err == -EINVAL ? "shorter than 16 characters, or readable by others (chmod 600)"
                             : pirec_strerror(err));
      pirec_config_free(cfg);
      return 1;
    }
    s.token = token;
  }
  if (a.url) {
    print_url(&s, s.port, stdout);
    rc = 0;
  } else {
    rc = serve(&s);
  }
  pirec_config_free(cfg);
  return rc;
}
