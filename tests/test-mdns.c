/* test-mdns: discovery of a "PI monitor" _http._tcp service through a real avahi daemon.
 *
 * The test makes its own world so it neither needs nor disturbs the host's: a private network and
 * mount namespace (unshare), a veth pair there (avahi ignores loopback and interfaces that are not
 * RUNNING, so a dummy interface does not do), a private D-Bus system bus (DBUS_SYSTEM_BUS_ADDRESS),
 * an avahi-daemon on it, and avahi-publish announcing a fake Neon and a decoy. Needs root and the
 * packages avahi-daemon, avahi-utils, dbus; skips (77) with the reason otherwise. */
#include "pirec/mdns.h"
#include "pirec/eyetracker.h"

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
#define CHECK(c)                                                            \
  do {                                                                      \
    if (!(c)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      failed = 1;                                                           \
      goto out;                                                             \
    }                                                                       \
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
static void on_found(struct pirec_mdns *m, int status, const struct pirec_mdns_result *r, const char *err,
                     void *user)
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

static void kill_daemon_later(uv_timer_t *t)
{
  kill(pids[1], SIGTERM); /* avahi-daemon */
  uv_close((uv_handle_t *)t, NULL);
}

/* One lookup, run to its answer; returns what pirec_mdns_lookup_new returned. */
static int lookup(uv_loop_t *loop, const char *prefix, int timeout_ms, struct answer *a)
{
  memset(a, 0, sizeof *a);
  struct pirec_mdns *m = NULL;
  int r = pirec_mdns_lookup_new(loop, PIREC_MDNS_NEON_TYPE, prefix, timeout_ms, KEY, on_found, a, &m, a->err,
                                sizeof a->err);
  uv_run(loop, UV_RUN_DEFAULT); /* until answered and closed, or the failed handle has closed */
  return r;
}

/* A stand-in for the Neon's HTTP API on the veth address (a real socket): answers /api/status. */
struct fake_http {
  uv_tcp_t srv;
  int hits;
  char last_local[64]; /* the address the last status request was made to */
};
struct conn {
  uv_tcp_t tcp;
  uv_write_t w;
  char buf[2048];
  size_t len;
  struct fake_http *fh;
};
static void conn_closed(uv_handle_t *h)
{
  free(h->data);
}
static void conn_written(uv_write_t *w, int status)
{
  (void)status;
  struct conn *c = w->data;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}
static void conn_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
  (void)n;
  struct conn *c = h->data;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}
static void conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
  (void)b;
  struct conn *c = st->data;
  if (n < 0) {
    uv_close((uv_handle_t *)st, conn_closed);
    return;
  }
  c->len += (size_t)n;
  c->buf[c->len] = 0;
  if (!strstr(c->buf, "\r\n\r\n"))
    return;
  uv_read_stop(st);
  if (strncmp(c->buf, "GET /api/status ", 16) == 0) {
    c->fh->hits++;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname((uv_tcp_t *)st, (struct sockaddr *)&ss, &len) == 0)
      uv_ip4_name((struct sockaddr_in *)&ss, c->fh->last_local, sizeof c->fh->last_local);
  }
  static char ans[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                      "Content-Length: 13\r\n\r\n{\"result\":[]}";
  uv_buf_t out = uv_buf_init(ans, sizeof ans - 1);
  c->w.data = c;
  if (uv_write(&c->w, st, &out, 1, conn_written) < 0)
    uv_close((uv_handle_t *)st, conn_closed);
}
static void on_conn(uv_stream_t *srv, int status)
{
  if (status < 0)
    return;
  struct conn *c = calloc(1, sizeof *c);
  c->fh = srv->data;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) == 0)
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
  else
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* A port that accepts and hangs up at once, noting the address it was reached on: where the gaze
 * stream's RTSP connection went. */
static void on_rtsp_conn(uv_stream_t *srv, int status)
{
  if (status < 0)
    return;
  struct fake_http *fh = srv->data;
  uv_tcp_t *c = calloc(1, sizeof *c);
  uv_tcp_init(srv->loop, c);
  if (uv_accept(srv, (uv_stream_t *)c) == 0) {
    fh->hits++;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(c, (struct sockaddr *)&ss, &len) == 0)
      uv_ip4_name((struct sockaddr_in *)&ss, fh->last_local, sizeof fh->last_local);
  }
  c->data = c;
  uv_close((uv_handle_t *)c, conn_closed);
}

/* Listens on 0.0.0.0:port for the fake's connections. */
static int fake_listen(uv_loop_t *loop, struct fake_http *fh, int port, uv_connection_cb cb)
{
  struct sockaddr_in sin;
  uv_ip4_addr("0.0.0.0", port, &sin);
  uv_tcp_init(loop, &fh->srv);
  fh->srv.data = fh;
  if (uv_tcp_bind(&fh->srv, (struct sockaddr *)&sin, 0) != 0 ||
      uv_listen((uv_stream_t *)&fh->srv, 8, cb) != 0)
    return -1;
  return 0;
}

/* An eye tracker that finds its device by mDNS and streams gaze only. */
static void auto_gaze_settings(struct pirec_eyetracker_settings *es)
{
  pirec_eyetracker_settings_default(es);
  if (pirec_eyetracker_settings_set_address(es, "auto") != 0)
    abort();
  es->world = es->events = 0;
}

struct et_wait {
  uv_timer_t t;
  struct pirec_eyetracker *et;
  int ticks, closed;
  struct pirec_eyetracker_status st;
  struct fake_http *fh;
};
static void et_closed(struct pirec_eyetracker *et, void *user)
{
  (void)et;
  ((struct et_wait *)user)->closed = 1;
}
static void et_tick(uv_timer_t *t)
{
  struct et_wait *w = (struct et_wait *)t;
  pirec_eyetracker_status(w->et, &w->st);
  if (w->st.status_ok > 0 || ++w->ticks > 200) { /* 10 s */
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    uv_close((uv_handle_t *)&w->fh->srv, NULL);
    pirec_eyetracker_close(w->et, et_closed, w);
  }
}

/* The device moves: once the eye tracker has found it at 10.77.0.1 and looked again (its streams
 * cannot connect: nothing serves RTSP here), the announcement is withdrawn and made again for a
 * host at 10.77.0.2. */
struct moved_wait {
  uv_timer_t t;
  struct pirec_eyetracker *et;
  struct pirec_eyetracker_status st;
  struct fake_http *fh, *rtsp;
  pid_t neon_a;
  int moved, ticks, closed;
};
static void moved_closed(struct pirec_eyetracker *et, void *user)
{
  (void)et;
  ((struct moved_wait *)user)->closed = 1;
}
static void moved_tick(uv_timer_t *t)
{
  struct moved_wait *w = (struct moved_wait *)t;
  pirec_eyetracker_status(w->et, &w->st);
  if (!w->moved && w->st.status_ok == 1 && w->st.rediscoveries >= 1) {
    w->moved = 1;
    kill(w->neon_a, SIGTERM);
    spawn((char *[]){"avahi-publish", "-a", "-R", "neon-b.local", "10.77.0.2", NULL});
    spawn((char *[]){"avahi-publish", "-s", "-H", "neon-b.local", "PI monitor:test:1234", "_http._tcp",
                     "18080", NULL});
  }
  if (w->st.address_changes >= 1 && w->st.status_ok >= 2 && strcmp(w->rtsp->last_local, "10.77.0.2") == 0)
    w->ticks = 1000;
  if (++w->ticks > 600) { /* 30 s */
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    uv_close((uv_handle_t *)&w->fh->srv, NULL);
    uv_close((uv_handle_t *)&w->rtsp->srv, NULL);
    pirec_eyetracker_close(w->et, moved_closed, w);
  }
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
  /* lo up: traffic to the veth address is local and goes through it. */
  if (sh("ip link set lo up && ip link add pirecmd0 type veth peer name pirecmd1 && "
         "ip link set pirecmd1 up && ip link set pirecmd0 up && ip addr add 10.77.0.1/24 dev pirecmd0") != 0)
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

  /* 1. A bus without avahi: the lookup starts without waiting on D-Bus (the connect runs on avahi's
   * thread), then its callback brings the clear message naming the key, long before the timeout. */
  struct answer a;
  uint64_t t0 = uv_hrtime();
  int r = lookup(&loop, PIREC_MDNS_NEON_PREFIX, 20000, &a);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  printf("no daemon: %d status %d after %llu ms '%s'\n", r, a.status, (unsigned long long)ms, a.err);
  CHECK(r == 0 && a.called == 1 && a.closed == 1 && a.status == -ENOTSUP && ms < 10000);
  CHECK(strstr(a.err, "not running") && strstr(a.err, KEY));
  char perr[512];
  CHECK(pirec_mdns_probe(KEY, perr, sizeof perr) == -ENOTSUP && strstr(perr, "not running"));
  {
    /* The eye tracker says so at once, at configuration. */
    struct pirec_eyetracker_settings es;
    struct pirec_eyetracker *et = NULL;
    pirec_eyetracker_settings_default(&es);
    CHECK(pirec_eyetracker_new(&loop, &es, NULL, NULL, &et) == -ENOTSUP && et == NULL);
  }

  /* 2. The daemon, a fake Neon and a decoy whose name lacks the prefix. */
  CHECK(spawn((char *[]){"avahi-daemon", "-f", aconf, "--no-drop-root", "--no-chroot", "--no-rlimits",
                         NULL}) > 0);
  for (int i = 0; i < 100; i++) {
    /* -ENOTSUP until the daemon is on the bus, then -ETIMEDOUT (nothing has this prefix) */
    r = lookup(&loop, "no such prefix", 300, &a);
    if (r == 0 && a.status == -ETIMEDOUT)
      break;
    usleep(100000);
  }
  printf("daemon on the bus\n");
  CHECK(r == 0 && a.status == -ETIMEDOUT);
  CHECK(pirec_mdns_probe(KEY, perr, sizeof perr) == 0);
  CHECK(spawn((char *[]){"avahi-publish", "-s", "Other web site", "_http._tcp", "18081", NULL}) > 0);
  pid_t neon_a =
      spawn((char *[]){"avahi-publish", "-s", "PI monitor:test:1234", "_http._tcp", "18080", NULL});
  CHECK(neon_a > 0);
  r = lookup(&loop, PIREC_MDNS_NEON_PREFIX, 15000, &a);
  printf("found: %d status %d '%s' %s:%d '%s'\n", r, a.status, a.res.name, a.res.host, a.res.port, a.err);
  struct in_addr in;
  CHECK(r == 0 && a.called == 1 && a.closed == 1 && a.status == 0);
  CHECK(a.res.port == 18080);
  CHECK(strcmp(a.res.name, "PI monitor:test:1234") == 0);
  CHECK(inet_pton(AF_INET, a.res.host, &in) == 1);
  CHECK(strcmp(a.res.host, "10.77.0.1") == 0); /* the only address in this namespace */

  /* 3. Nothing with this prefix: -ETIMEDOUT after the timeout, with the key in the message. */
  t0 = uv_hrtime();
  r = lookup(&loop, "PI nothing", 1500, &a);
  ms = (uv_hrtime() - t0) / 1000000;
  printf("timeout: %d status %d after %llu ms '%s'\n", r, a.status, (unsigned long long)ms, a.err);
  CHECK(r == 0 && a.called == 1 && a.status == -ETIMEDOUT && ms >= 1400);
  CHECK(strstr(a.err, KEY) && strstr(a.err, "PI nothing"));

  /* 4. Closed before any answer: the callback never runs, the close callback does once. */
  {
    struct pirec_mdns *m = NULL;
    memset(&a, 0, sizeof a);
    int closed = 0;
    CHECK(pirec_mdns_lookup_new(&loop, PIREC_MDNS_NEON_TYPE, PIREC_MDNS_NEON_PREFIX, 5000, KEY, on_found, &a,
                                &m, a.err, sizeof a.err) == 0);
    pirec_mdns_close(m, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(a.called == 0 && closed == 1 && a.closed == 0);
  }

  /* 5. The eye tracker with address = auto: discovery at start, then /api/status on the address
   * and port found (the fake Neon's), on a real socket. */
  {
    struct fake_http fh = {.hits = 0};
    CHECK(fake_listen(&loop, &fh, 18080, on_conn) == 0);
    struct pirec_eyetracker_settings es;
    auto_gaze_settings(&es);
    struct et_wait w = {.fh = &fh};
    CHECK(pirec_eyetracker_new(&loop, &es, NULL, NULL, &w.et) == 0);
    CHECK(pirec_eyetracker_start(w.et) == 0);
    uv_timer_init(&loop, &w.t);
    uv_timer_start(&w.t, et_tick, 50, 50);
    uv_run(&loop, UV_RUN_DEFAULT);
    printf("eyetracker auto: status_ok %llu failed %llu, fake API hits %d, closed %d\n",
           (unsigned long long)w.st.status_ok, (unsigned long long)w.st.status_failed, fh.hits, w.closed);
    CHECK(w.st.status_ok == 1 && fh.hits == 1 && w.closed == 1);
  }

  /* 5b. The device moves to another address: the eye tracker's streams fail against the old one,
   * it asks mDNS again, and takes the new address for /api/status and the streams. */
  {
    CHECK(sh("ip addr add 10.77.0.2/24 dev pirecmd0") == 0);
    struct fake_http fh = {.hits = 0};
    CHECK(fake_listen(&loop, &fh, 18080, on_conn) == 0);
    struct pirec_eyetracker_settings es;
    auto_gaze_settings(&es);
    es.reconnect_min_ns = 100000000; /* 100 ms: three failed connects in well under a second */
    es.reconnect_max_ns = 400000000;
    struct fake_http rtsp = {.hits = 0};
    CHECK(fake_listen(&loop, &rtsp, 8086, on_rtsp_conn) == 0);
    struct moved_wait w = {.fh = &fh, .rtsp = &rtsp, .neon_a = neon_a};
    CHECK(pirec_eyetracker_new(&loop, &es, NULL, NULL, &w.et) == 0);
    CHECK(pirec_eyetracker_start(w.et) == 0);
    uv_timer_init(&loop, &w.t);
    uv_timer_start(&w.t, moved_tick, 50, 50);
    uv_run(&loop, UV_RUN_DEFAULT);
    printf("moved: status_ok %llu, rediscoveries %llu, address changes %llu, host %s, last status "
           "request to %s, %d gaze connections, the last to %s\n",
           (unsigned long long)w.st.status_ok, (unsigned long long)w.st.rediscoveries,
           (unsigned long long)w.st.address_changes, w.st.host, fh.last_local, rtsp.hits, rtsp.last_local);
    CHECK(w.moved && w.closed && w.st.address_changes == 1 && w.st.status_ok == 2);
    CHECK(strcmp(w.st.host, "10.77.0.2") == 0 && strcmp(fh.last_local, "10.77.0.2") == 0);
    CHECK(strcmp(rtsp.last_local, "10.77.0.2") == 0);
  }

  /* 6. The daemon gone mid-lookup: reported as an error naming the key, not a hang. */
  {
    struct pirec_mdns *m = NULL;
    memset(&a, 0, sizeof a);
    CHECK(pirec_mdns_lookup_new(&loop, PIREC_MDNS_NEON_TYPE, "PI nothing", 20000, KEY, on_found, &a, &m,
                                a.err, sizeof a.err) == 0);
    /* Let avahi's thread connect and browse first (the loop stays free meanwhile). */
    uv_timer_t settle;
    uv_timer_init(&loop, &settle);
    /* The timer counts from the loop's cached time: refresh it, so the kill comes 500 ms after t1
     * (libuv's millisecond rounding may fire it up to 1 ms early). */
    uint64_t t1 = uv_hrtime();
    uv_update_time(&loop);
    uv_timer_start(&settle, kill_daemon_later, 500, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ms = (uv_hrtime() - t1) / 1000000;
    printf("daemon gone: status %d after %llu ms '%s'\n", a.status, (unsigned long long)ms, a.err);
    CHECK(a.called == 1 && a.closed == 1 && a.status == -ENOTSUP && ms >= 499 && ms < 10000);
    CHECK(strstr(a.err, "lost the avahi daemon") && strstr(a.err, KEY));
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
