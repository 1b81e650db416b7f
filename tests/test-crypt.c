/* Tests for io/crypt and the sink's encrypting transform, on a real libuv loop writing real files:
 * an encrypted sink's file decrypts to exactly what an unencrypted sink given the same records
 * wrote; every kind of tampering is detected and named with its chunk and offset; a writer killed
 * with SIGKILL leaves every complete chunk decryptable; key files and sealed keys round trip; the
 * key never appears in the files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <uv.h>

#include "pirec/crypt.h"
#include "pirec/sink.h"

static char *make_tmpdir(void)
{
  char tmpl[] = "/tmp/pirec-test-crypt-XXXXXX";
  char *d = mkdtemp(tmpl);
  assert_non_null(d);
  return strdup(d);
}

/* Record n of the deterministic stream: rows of 60..140 bytes, every 50th a 40..90 KB "frame". */
static size_t record(uint64_t n, unsigned char *buf)
{
  size_t len = n % 50 == 49 ? 40000 + (size_t)(n * 7919 % 50000) : 60 + (size_t)(n * 31 % 81);
  uint64_t x = n * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
  return len;
}

/* ---- a sink fed from the loop thread in bursts, so that the file has many chunks ---- */

struct feed {
  uv_loop_t loop;
  uv_timer_t timer;
  struct pirec_sink *sink;
  uint64_t next, total;
  unsigned char *buf;
  int closed, errors;
};

static void on_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  (void)sink;
  struct feed *f = user;
  (void) final; /* refused pushes were retried: drops count them, the file has every record */
  assert_int_equal(final->error, 0);
  f->closed = 1;
}

static void on_timer(uv_timer_t *t)
{
  struct feed *f = t->data;
  for (int i = 0; i < 97 && f->next < f->total; i++) {
    size_t len = record(f->next, f->buf);
    int r = pirec_sink_push(f->sink, f->buf, len);
    if (r == -ENOBUFS) /* the disk is behind: this record again at the next tick */
      break;
    assert_int_equal(r, 0);
    f->next++;
  }
  pirec_sink_flush(f->sink);
  if (f->next == f->total) {
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    pirec_sink_close(f->sink, on_closed, f);
  }
}

/* Writes records [0, total) to path through a sink, encrypted under key (NULL: clear). */
static void write_file(const char *path, const struct pirec_crypt_key *key, const char *dir, uint64_t total)
{
  struct feed f = {.total = total};
  struct pirec_sink_options o;
  struct pirec_sink_transform tf;
  pirec_sink_options_default(&o);
  o.batch_bytes = 256 << 10; /* several chunks per burst */
  if (key) {
    assert_int_equal(pirec_crypt_sink_transform(key, dir, path, &tf), 0);
    o.transform = &tf;
  }
  f.buf = malloc(1 << 17);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  assert_int_equal(pirec_sink_new(&f.loop, path, &o, NULL, NULL, &f.sink), 0);
  uv_timer_init(&f.loop, &f.timer);
  f.timer.data = &f;
  uv_timer_start(&f.timer, on_timer, 1, 1);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_true(f.closed);
  assert_int_equal(uv_loop_close(&f.loop), 0);
  free(f.buf);
}

/* Decrypts path as name; returns the reader's final status, the plaintext in *out. */
static int decrypt_file(const struct pirec_crypt_key *key, const char *name, const char *path,
                        unsigned char **out, size_t *len, char *why, uint64_t *chunk, uint64_t *offset)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  struct pirec_crypt_reader *r;
  assert_int_equal(pirec_crypt_reader_new(key, name, fd, &r), 0);
  size_t cap = 1 << 20;
  *out = malloc(cap);
  *len = 0;
  const unsigned char *p;
  size_t n;
  int st;
  while ((st = pirec_crypt_reader_next(r, &p, &n)) > 0) {
    while (*len + n > cap)
      *out = realloc(*out, cap *= 2);
    memcpy(*out + *len, p, n);
    *len += n;
  }
  if (why)
    snprintf(why, 256, "%s", pirec_crypt_reader_why(r));
  if (chunk)
    *chunk = pirec_crypt_reader_chunk(r);
  if (offset)
    *offset = pirec_crypt_reader_offset(r);
  pirec_crypt_reader_free(r);
  close(fd);
  return st;
}

static unsigned char *read_all(const char *path, size_t *len)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  unsigned char *b = malloc((size_t)st.st_size + 1);
  assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
  close(fd);
  *len = (size_t)st.st_size;
  return b;
}

static void write_all(const char *path, const unsigned char *b, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, b, len), (ssize_t)len);
  close(fd);
}

/* Chunk boundaries of an encrypted file with one segment: offsets of each chunk's length field. */
static size_t chunk_offsets(const unsigned char *b, size_t len, size_t *offs, size_t max)
{
  size_t n = 0, at = PIREC_CRYPT_HEADER_BYTES;
  while (at + 4 <= len && n < max) {
    offs[n++] = at;
    at += 4 + ((size_t)b[at] | (size_t)b[at + 1] << 8 | (size_t)b[at + 2] << 16 | (size_t)b[at + 3] << 24);
  }
  return n;
}

struct fixture {
  char *dir;
  char clear[512], enc[512], enc2[512];
  struct pirec_crypt_key *key;
};

static int setup(void **state)
{
  struct fixture *fx = calloc(1, sizeof *fx);
  fx->dir = make_tmpdir();
  snprintf(fx->clear, sizeof fx->clear, "%s/clear.csv", fx->dir);
  snprintf(fx->enc, sizeof fx->enc, "%s/cam/t001.mkv", fx->dir);
  snprintf(fx->enc2, sizeof fx->enc2, "%s/cam/t001_frames.csv", fx->dir);
  char cam[512];
  snprintf(cam, sizeof cam, "%s/cam", fx->dir);
  mkdir(cam, 0755);
  assert_int_equal(pirec_crypt_key_new(&fx->key), 0);
  *state = fx;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *fx = *state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
  assert_int_equal(system(cmd), 0);
  pirec_crypt_key_free(fx->key);
  free(fx->dir);
  free(fx);
  return 0;
}

/* ---- tests ---- */

static void test_round_trip_equals_clear_sink(void **state)
{
  struct fixture *fx = *state;
  write_file(fx->clear, NULL, fx->dir, 3000);
  write_file(fx->enc, fx->key, fx->dir, 3000);
  size_t clen, plen;
  unsigned char *clear = read_all(fx->clear, &clen), *plain;
  assert_int_equal(decrypt_file(fx->key, "cam/t001.mkv", fx->enc, &plain, &plen, NULL, NULL, NULL), 0);
  assert_int_equal(plen, clen);
  assert_memory_equal(plain, clear, clen);
  /* Many chunks: the stream was cut at the sink's batches, not written as one. */
  size_t elen, offs[4096];
  unsigned char *enc = read_all(fx->enc, &elen);
  assert_true(chunk_offsets(enc, elen, offs, 4096) > 10);
  /* The key is nowhere in the file, raw or as text. */
  char text[PIREC_CRYPT_KEY_TEXT];
  pirec_crypt_key_text(fx->key, text);
  assert_null(memmem(enc, elen, text, strlen(text)));
  unsigned char raw[PIREC_CRYPT_KEY_BYTES];
  size_t rl;
  assert_int_equal(
      sodium_base642bin(raw, sizeof raw, text, strlen(text), NULL, &rl, NULL, sodium_base64_VARIANT_ORIGINAL),
      0);
  assert_null(memmem(enc, elen, raw, rl));
  free(enc), free(clear), free(plain);
}

/* Rewrites the encrypted file with damage, decrypts it and checks the error, its chunk and offset,
 * and that what came out before it is exactly the clear stream's prefix. */
static void expect_damage(struct fixture *fx, const unsigned char *b, size_t len, int err, uint64_t chunk,
                          uint64_t offset, const char *word)
{
  write_all(fx->enc, b, len);
  unsigned char *plain;
  size_t plen, clen;
  char why[256];
  uint64_t c, o;
  assert_int_equal(decrypt_file(fx->key, "cam/t001.mkv", fx->enc, &plain, &plen, why, &c, &o), err);
  assert_int_equal(c, chunk);
  assert_int_equal(o, offset);
  assert_non_null(strstr(why, word));
  unsigned char *clear = read_all(fx->clear, &clen);
  assert_true(plen <= clen);
  assert_memory_equal(plain, clear, plen);
  free(plain), free(clear);
}

static void test_tampering_detected_and_named(void **state)
{
  struct fixture *fx = *state;
  write_file(fx->clear, NULL, fx->dir, 1500);
  write_file(fx->enc, fx->key, fx->dir, 1500);
  size_t len, offs[4096];
  unsigned char *orig = read_all(fx->enc, &len), *b = malloc(len);
  size_t n = chunk_offsets(orig, len, offs, 4096);
  assert_true(n > 6);

  /* A flipped byte inside chunk 3. */
  memcpy(b, orig, len);
  b[offs[3] + 40] ^= 0x01;
  expect_damage(fx, b, len, -EBADMSG, 3, offs[3], "verification");
  /* Chunk 2 removed. */
  size_t c2 = offs[3] - offs[2];
  memcpy(b, orig, offs[2]);
  memcpy(b + offs[2], orig + offs[3], len - offs[3]);
  expect_damage(fx, b, len - c2, -EBADMSG, 2, offs[2], "verification");
  /* Truncated inside chunk 4, and exactly after chunk 4 (the final chunk is missing). */
  expect_damage(fx, orig, offs[4] + 10, -ENODATA, 4, offs[4], "ends inside");
  expect_damage(fx, orig, offs[5], -ENODATA, 5, offs[5], "final chunk");
  /* The last chunk (the FINAL one) removed. */
  expect_damage(fx, orig, offs[n - 1], -ENODATA, n - 1, offs[n - 1], "final chunk");
  /* A wrong key: named at the header. */
  struct pirec_crypt_key *other;
  assert_int_equal(pirec_crypt_key_new(&other), 0);
  write_all(fx->enc, orig, len);
  unsigned char *plain;
  size_t plen;
  char why[256];
  uint64_t c, o;
  assert_int_equal(decrypt_file(other, "cam/t001.mkv", fx->enc, &plain, &plen, why, &c, &o), -EACCES);
  assert_int_equal(plen, 0);
  assert_non_null(strstr(why, "another session key"));
  free(plain);
  /* The right key, but the file renamed: its name is bound as additional data. */
  assert_int_equal(decrypt_file(fx->key, "cam/t002.mkv", fx->enc, &plain, &plen, why, &c, &o), -EBADMSG);
  assert_int_equal(plen, 0);
  assert_int_equal(c, 0);
  free(plain);
  pirec_crypt_key_free(other);
  free(orig), free(b);
}

static void test_chunks_swapped_between_files(void **state)
{
  struct fixture *fx = *state;
  write_file(fx->clear, NULL, fx->dir, 1500);
  write_file(fx->enc, fx->key, fx->dir, 1500);
  write_file(fx->enc2, fx->key, fx->dir, 1500); /* the same plaintext, another file of the session */
  size_t l1, l2, o1[4096], o2[4096];
  unsigned char *a = read_all(fx->enc, &l1), *b = read_all(fx->enc2, &l2);
  assert_true(chunk_offsets(a, l1, o1, 4096) > 4 && chunk_offsets(b, l2, o2, 4096) > 4);
  /* Chunk 2 of the other file put in place of this one's. */
  size_t c2 = o2[3] - o2[2];
  unsigned char *c = malloc(l1 + l2);
  memcpy(c, a, o1[2]);
  memcpy(c + o1[2], b + o2[2], c2);
  memcpy(c + o1[2] + c2, a + o1[3], l1 - o1[3]);
  expect_damage(fx, c, o1[2] + c2 + l1 - o1[3], -EBADMSG, 2, o1[2], "another file");
  /* The other file's header and first chunk spliced in: its stream fails under this name. */
  memcpy(c, b, o2[1]);
  memcpy(c + o2[1], a + o1[1], l1 - o1[1]);
  expect_damage(fx, c, o2[1] + l1 - o1[1], -EBADMSG, 0, PIREC_CRYPT_HEADER_BYTES, "verification");
  free(a), free(b), free(c);
}

/* ---- SIGKILL while writing: a child process writes until killed ---- */

/* The writer is a fresh process (exec), as a recorder is: it makes its copy of the key from the
 * text, the way a recorder gets it in its start command. */
static void writer_child(const char *path, const char *key_text, const char *dir)
{
  struct pirec_crypt_key *key;
  if (pirec_crypt_key_from_text(key_text, &key) != 0)
    _exit(2);
  write_file(path, key, dir, UINT64_MAX / 2); /* never ends: killed */
  _exit(3);
}

static void test_sigkill_leaves_complete_chunks(void **state)
{
  struct fixture *fx = *state;
  char text[PIREC_CRYPT_KEY_TEXT];
  pirec_crypt_key_text(fx->key, text);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    execl("/proc/self/exe", "test-crypt", "--writer", fx->enc, text, fx->dir, (char *)NULL);
    _exit(127);
  }
  /* Wait (no time bound but the test's) until the child has written a few MB, then kill it. */
  struct stat st = {0};
  int status;
  while (stat(fx->enc, &st) != 0 || st.st_size < (8 << 20)) {
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0); /* the writer must still be writing */
    usleep(2000);
  }
  kill(pid, SIGKILL);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  size_t len, offs[65536];
  unsigned char *enc = read_all(fx->enc, &len);
  size_t n = chunk_offsets(enc, len, offs, 65536);
  /* Complete chunks: those whose end is inside the file. */
  size_t complete = 0;
  for (size_t i = 0; i < n; i++) {
    size_t clen = (size_t)enc[offs[i]] | (size_t)enc[offs[i] + 1] << 8 | (size_t)enc[offs[i] + 2] << 16 |
                  (size_t)enc[offs[i] + 3] << 24;
    if (offs[i] + 4 + clen <= len)
      complete++;
  }
  unsigned char *plain;
  size_t plen;
  char why[256];
  uint64_t c, o;
  assert_int_equal(decrypt_file(fx->key, "cam/t001.mkv", fx->enc, &plain, &plen, why, &c, &o), -ENODATA);
  assert_int_equal(c, complete);
  /* Everything decrypted is the stream's records, in order, whole chunks of them. */
  unsigned char *rec = malloc(1 << 17);
  size_t at = 0;
  uint64_t i = 0;
  while (at < plen) {
    size_t rl = record(i++, rec);
    assert_true(at + rl <= plen);
    assert_memory_equal(plain + at, rec, rl);
    at += rl;
  }
  assert_true(plen > (4 << 20));
  free(rec), free(plain), free(enc);
}

/* ---- keys ---- */

static void test_keys_seal_and_files(void **state)
{
  (void)state;
  unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], pk2[PIREC_CRYPT_PUBLIC_BYTES], *sk, *sk2;
  assert_int_equal(pirec_crypt_keypair_new(pk, &sk), 0);
  char text[512], why[160];
  assert_int_equal(pirec_crypt_secret_format(pk, sk, text, sizeof text), 0);
  assert_int_equal(pirec_crypt_secret_parse(text, pk2, &sk2, why, sizeof why), 0);
  assert_memory_equal(pk, pk2, sizeof pk);
  assert_memory_equal(sk, sk2, PIREC_CRYPT_SECRET_BYTES);
  pirec_crypt_secret_free(sk2);

  struct pirec_crypt_key *key, *back;
  unsigned char sealed[PIREC_CRYPT_SEALED_BYTES];
  assert_int_equal(pirec_crypt_key_new(&key), 0);
  assert_int_equal(pirec_crypt_key_seal(key, pk, sealed), 0);
  assert_int_equal(pirec_crypt_key_unseal(sealed, pk, sk, &back), 0);
  assert_memory_equal(pirec_crypt_key_id(key), pirec_crypt_key_id(back), PIREC_CRYPT_ID_BYTES);
  pirec_crypt_key_free(back);
  sealed[40] ^= 1;
  assert_int_equal(pirec_crypt_key_unseal(sealed, pk, sk, &back), -EACCES);

  /* A damaged line is named. */
  char *line2 = strstr(text, "\npublic ");
  line2[8] = '!';
  assert_int_equal(pirec_crypt_secret_parse(text, pk2, &sk2, why, sizeof why), -EINVAL);
  assert_non_null(strstr(why, "line 3"));
  assert_int_equal(pirec_crypt_secret_parse("public AAAA\n", pk2, &sk2, why, sizeof why), -EINVAL);
  assert_int_equal(pirec_crypt_public_parse("not base64", pk2), -EINVAL);
  pirec_crypt_key_free(key);
  pirec_crypt_secret_free(sk);
}

static void test_names(void **state)
{
  (void)state;
  assert_string_equal(pirec_crypt_name("/s/x", "/s/x/cam0/t001.mkv"), "cam0/t001.mkv");
  assert_string_equal(pirec_crypt_name("/s/x/", "/s/x/notes.csv"), "notes.csv");
  assert_string_equal(pirec_crypt_name("/s/x", "/s/xy/notes.csv"), "notes.csv");
  assert_string_equal(pirec_crypt_name(NULL, "/a/b.csv"), "b.csv");
}

int main(int argc, char **argv)
{
  assert_int_equal(pirec_crypt_init(), 0);
  if (argc == 5 && strcmp(argv[1], "--writer") == 0)
    writer_child(argv[2], argv[3], argv[4]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip_equals_clear_sink, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tampering_detected_and_named, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chunks_swapped_between_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sigkill_leaves_complete_chunks, setup, teardown),
      cmocka_unit_test(test_keys_seal_and_files),
      cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
