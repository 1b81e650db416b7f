/* test-mdns: discovery of a "PI monitor" _http._tcp service through a real avahi daemon.
 *
 * The test makes its own world so it neither needs nor disturbs the host's: a private network and
 * mount namespace (unshare), a veth pair there (avahi ignores loopback and interfaces that are not
 * RUNNING, so a dummy interface does not do), a private D-Bus system bus (DBUS_SYSTEM_BUS_ADDRESS),
 * an avahi-daemon on it, and avahi-publish announcing a fake Neon and a decoy. Needs root and the
 * packages avahi-daemon, avahi-utils, dbus; skips (77) with the reason otherwise. */
#include "pirec/mdns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY "[eyetracker] address = IP:8080"
#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);      \
      failed = 1;                                                                \
      goto out;                                                                  \
    }                                                                            \
  } while (0)

static char dir[] = "/tmp/pirec-mdns-XXXXXX";
static pid_t pids[8];
static int npids;

static int skip(const char *why)
{
  printf("SKIP: %s\n", why);
  return 77;
}

static int in_path(const char *name)
{
  const char *path = getenv("PATH");
  char buf[4096];
  snprintf(buf, sizeof buf, "%s:/usr/sbin:/sbin", path ? path : "/usr/bin:/bin");
  for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char p[4352];
    snprintf(p, sizeof p, "%s/%s", d, name);
    if (access(p, X_OK) == 0)
      return 1;
  }
  return 0;
}

static pid_t spawn(char *const argv[])
{
  /* fork+exec rather than posix_spawn: the children must die with the test (PR_SET_PDEATHSIG) even
   * when ctest kills it on a timeout. */
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  pids[npids++] = pid;
  return pid;
}

static void write_file(const char *name, const char *text)
{
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static int sh(const char *cmd)
{
  int r = system(cmd);
  if (r != 0)
    fprintf(stderr, "'%s' exited with %d\n", cmd, r);
  return r;
}

struct answer {
  int called;
  int status;
  struct pirec_mdns_result res;
  char err[512];
  int closed;
};

static void on_closed(struct pirec_mdns *m, void *user)
{
  (void)m;
  ++*(int *)user;
}

/* Closes the handle from its own callback, as a user does: the loop then ends by itself. */
static void on_found(struct pirec_mdns *m, int status, const struct pirec_mdns_result *r,
                     const char *err, void *user)
{
  struct answer *a = user;
  a->called++;
  a->status = status;
  if (r)
    a->res = *r;
  if (err)
    snprintf(a->err, sizeof a->err, "%s", err);
  pirec_mdns_close(m, on_closed, &a->closed);
}

/* One lookup, run to its answer; returns what pirec_mdns_lookup_new returned. */
static int lookup(uv_loop_t *loop, const char *prefix, int timeout_ms, struct answer *a)
{
  memset(a, 0, sizeof *a);
  struct pirec_mdns *m = NULL;
  int r = pirec_mdns_lookup_new(loop, PIREC_MDNS_NEON_TYPE, prefix, timeout_ms, KEY, on_found, a,
                                &m, a->err, sizeof a->err);
  uv_run(loop, UV_RUN_DEFAULT); /* until answered and closed, or the failed handle has closed */
  return r;
}

int main(void)
{
  setvbuf(stdout, NULL, _IONBF, 0);
  if (!pirec_mdns_available())
    return skip("this build has no avahi-client (install libavahi-client-dev and reconfigure)");
  if (geteuid() != 0)
    return skip("needs root for a private network namespace, bus and avahi-daemon");
  const char *need[] = {"avahi-daemon", "avahi-publish", "dbus-daemon", "ip"};
  for (size_t i = 0; i < sizeof need / sizeof *need; i++)
    if (!in_path(need[i])) {
      static char why[128];
      snprintf(why, sizeof why, "%s is not installed (packages avahi-daemon avahi-utils dbus iproute2)",
               need[i]);
      return skip(why);
    }
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0)
    return skip("unshare(CLONE_NEWNET|CLONE_NEWNS) is not permitted here");
  /* Private mounts: a tmpfs over /run/avahi-daemon keeps this daemon's pid file away from a host
   * daemon's. */
  mkdir("/run/avahi-daemon", 0755);
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
      mount("none", "/run/avahi-daemon", "tmpfs", 0, NULL) < 0)
    return skip("cannot mount a private tmpfs on /run/avahi-daemon");
  if (sh("ip link add pirecmd0 type veth peer name pirecmd1 && ip link set pirecmd1 up && "
         "ip link set pirecmd0 up && ip addr add 10.77.0.1/24 dev pirecmd0") != 0)
    return skip("cannot make a veth pair in the private network namespace");
  if (!mkdtemp(dir))
    return skip("mkdtemp failed");

  int failed = 0;
  uv_loop_t loop;
  uv_loop_init(&loop);
  char conf[1024], addr[256];
  snprintf(conf, sizeof conf,
           "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" "
           "\"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
           "<busconfig><type>system</type><listen>unix:path=%s/bus</listen>"
           "<auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>"
           "<allow own=\"*\"/><allow send_destination=\"*\" eavesdrop=\"true\"/>"
           "<allow eavesdrop=\"true\"/></policy></busconfig>\n",
           dir);
  write_file("bus.conf", conf);
  write_file("avahi.conf", "[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=pirecmd0\n"
                           "enable-dbus=yes\nratelimit-interval-usec=0\n[wide-area]\n"
                           "enable-wide-area=no\n[publish]\npublish-hinfo=no\n"
                           "publish-workstation=no\n");
  snprintf(addr, sizeof addr, "unix:path=%s/bus", dir);
  setenv("DBUS_SYSTEM_BUS_ADDRESS", addr, 1);

  char cfg[300], sock[300], aconf[300];
  snprintf(cfg, sizeof cfg, "--config-file=%s/bus.conf", dir);
  snprintf(sock, sizeof sock, "%s/bus", dir);
  snprintf(aconf, sizeof aconf, "%s/avahi.conf", dir);
  CHECK(spawn((char *[]){"dbus-daemon", cfg, "--nofork", NULL}) > 0);
  for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++)
    usleep(50000);
  CHECK(access(sock, F_OK) == 0);

  /* 1. A bus without avahi: the clear message, synchronously, naming the key. */
  struct answer a;
  int r = lookup(&loop, PIREC_MDNS_NEON_PREFIX, 2000, &a);
  printf("no daemon: %d '%s'\n", r, a.err);
  CHECK(r == -ENOTSUP && a.called == 0);
  CHECK(strstr(a.err, "not running") && strstr(a.err, KEY));

  /* 2. The daemon, a fake Neon and a decoy whose name lacks the prefix. */
  CHECK(spawn((char *[]){"avahi-daemon", "-f", aconf, "--no-drop-root", "--no-chroot",
                         "--no-rlimits", NULL}) > 0);
  for (int i = 0; i < 100; i++) {
    r = lookup(&loop, "no such prefix", 1, &a); /* answers -ENOTSUP until the daemon is on the bus */
    if (r == 0)
      break;
    usleep(100000);
  }
  printf("daemon on the bus\n");
  CHECK(r == 0);
  CHECK(spawn((char *[]){"avahi-publish", "-s", "Other web site", "_http._tcp", "18081", NULL}) > 0);
  CHECK(spawn((char *[]){"avahi-publish", "-s", "PI monitor:test:1234", "_http._tcp", "18080",
                         NULL}) > 0);
  r = lookup(&loop, PIREC_MDNS_NEON_PREFIX, 15000, &a);
  printf("found: %d status %d '%s' %s:%d '%s'\n", r, a.status, a.res.name, a.res.host,
         a.res.port, a.err);
  struct in_addr in;
  CHECK(r == 0 && a.called == 1 && a.closed == 1 && a.status == 0);
  CHECK(a.res.port == 18080);
  CHECK(strcmp(a.res.name, "PI monitor:test:1234") == 0);
  CHECK(inet_pton(AF_INET, a.res.host, &in) == 1);
  CHECK(strcmp(a.res.host, "10.77.0.1") == 0); /* the only address in this namespace */

  /* 3. Nothing with this prefix: -ETIMEDOUT after the timeout, with the key in the message. */
  uint64_t t0 = uv_hrtime();
  r = lookup(&loop, "PI nothing", 1500, &a);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  printf("timeout: %d status %d after %llu ms '%s'\n", r, a.status, (unsigned long long)ms, a.err);
  CHECK(r == 0 && a.called == 1 && a.status == -ETIMEDOUT && ms >= 1400);
  CHECK(strstr(a.err, KEY) && strstr(a.err, "PI nothing"));

  /* 4. Closed before any answer: the callback never runs, the close callback does once. */
  {
    struct pirec_mdns *m = NULL;
    memset(&a, 0, sizeof a);
    int closed = 0;
    CHECK(pirec_mdns_lookup_new(&loop, PIREC_MDNS_NEON_TYPE, PIREC_MDNS_NEON_PREFIX, 5000, KEY,
                                on_found, &a, &m, a.err, sizeof a.err) == 0);
    pirec_mdns_close(m, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(a.called == 0 && closed == 1 && a.closed == 0);
  }

  /* 5. The daemon gone mid-lookup: reported as an error naming the key, not a hang. */
  {
    struct pirec_mdns *m = NULL;
    memset(&a, 0, sizeof a);
    CHECK(pirec_mdns_lookup_new(&loop, PIREC_MDNS_NEON_TYPE, "PI nothing", 20000, KEY, on_found,
                                &a, &m, a.err, sizeof a.err) == 0);
    kill(pids[1], SIGTERM); /* avahi-daemon */
    uint64_t t1 = uv_hrtime();
    uv_run(&loop, UV_RUN_DEFAULT);
    ms = (uv_hrtime() - t1) / 1000000;
    printf("daemon gone: status %d after %llu ms '%s'\n", a.status, (unsigned long long)ms, a.err);
    CHECK(a.called == 1 && a.closed == 1 && a.status == -ENOTSUP && ms < 10000 && strstr(a.err, KEY));
  }

out:
  for (int i = npids - 1; i >= 0; i--) {
    kill(pids[i], SIGTERM);
    int st;
    waitpid(pids[i], &st, 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "uv_loop_close: handles left open\n");
    failed = 1;
  }
  char rm[300];
  snprintf(rm, sizeof rm, "rm -rf %s", dir);
  sh(rm);
  printf("%s\n", failed ? "FAIL" : "ok");
  return failed;
}
