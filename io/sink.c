#include "pirec/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pirec/error.h"
#include "pirec/fs.h"
#include "pirec/log.h"
#include "pirec/looplag.h"
#include "pirec/ring.h"
#include "pirec/container_of.h"

/* Most iovecs per write request: Linux's IOV_MAX, so libuv never has to split a request. */
#define IOV_PER_WRITE        1024
#define MAX_WRITES_IN_FLIGHT 64
/* Records up to this size are copied into the batch's staging buffer, back to back, rather than each
 * getting an iovec: the kernel's per-iovec cost (about 40 ns) exceeds copying a CSV row (100 bytes),
 * and a batch of 1024 single-row iovecs held the CSV path to about 5 M rows/s. Frames stay zero-copy. */
#define COALESCE_MAX 1024
/* Each slot's staging buffer, allocated the first time a small record is seen (a frame-only sink never
 * pays for it): about 2600 CSV rows per write request. */
#define STAGE_BYTES (256u << 10)

enum slot_state { SLOT_FREE, SLOT_WRITING, SLOT_DONE };

/* One write request: a batch of consecutive records written at one file offset. */
struct slot {
  uv_fs_t req;
  struct pirec_sink *sink;
  uv_buf_t *bufs; /* IOV_PER_WRITE entries */
  char *stage;    /* STAGE_BYTES for small records, or NULL until one is seen */
  size_t staged;  /* bytes of stage in use by this batch */
  unsigned nbufs;
  unsigned first;    /* first buffer not completely written yet (after a short write) */
  size_t records;    /* ring records this batch covers */
  uint64_t ring_end; /* the ring's take cursor after them, to release them in O(1) */
  size_t bytes;
  size_t done_bytes;
  int64_t offset; /* file offset of the batch's first byte, or -1 for O_APPEND files */
  enum slot_state state;
  /* Where each record of the batch ends (bytes from the batch's start), so a write that fails
   * part-way can be cut back to the last whole record: rows are coalesced into one iovec. */
  size_t *ends;
  size_t nends, ends_cap;
  int ends_lost; /* out of memory for ends: a failed batch is cut back to its start */
  /* With a transform: the batch gathered (tin), transformed (tout) and written in the threadpool. */
  uv_work_t work;
  unsigned char *tin, *tout;
  size_t tin_cap, tout_cap;
  size_t plain;   /* the batch's record bytes (bytes is then its size in the file) */
  uint64_t chunk; /* the chunk's index */
  int final;
  size_t t_written;
  int t_err;
};

struct pirec_sink {
  /* Settings, fixed at creation. */
  uv_loop_t *loop;
  char *path;
  struct pirec_sink_options opts;
  pirec_sink_error_cb on_error;
  pirec_sink_written_cb on_written;
  void *user;
  int append;                     /* O_APPEND: the kernel picks offsets, so only one write may be in flight */
  struct pirec_sink_transform tf; /* tf.apply NULL: none */

  struct pirec_ring *ring;

  /* Read on every push, written by the loop rarely (once per drain, once on error). They sit on a
   * cache line of their own, apart from the counters the loop updates after each write, so a push
   * does not wait for a line the loop just wrote. */
  alignas(64) _Atomic uint64_t loop_seen; /* producer_bytes as the loop last saw it when draining */
  _Atomic int error;

  /* Producer-private. */
  alignas(64) uint64_t producer_bytes; /* payload bytes pushed */
  uint64_t woke_at;                    /* loop_seen when the producer last woke the loop */
  size_t reserved_max;                 /* the open reservation's size; 0 when none */

  /* Written by the loop, read from any thread. */
  alignas(64) _Atomic uint64_t bytes_written;
  _Atomic uint64_t writes;
  _Atomic uint64_t syncs;

  /* Loop thread only. */
  uv_async_t async;
  uv_timer_t drain_timer;
  uv_timer_t sync_timer;
  uv_fs_t open_req;
  uv_work_t open_work; /* opts.mkdir_mode: mkdir -p of the parent, then open, in the threadpool */
  int open_result;
  uv_fs_t sync_req;
  uv_fs_t close_req;
  uv_file fd;
  int opening;
  int held;
  int sync_busy;
  int error_reported;
  int closing;
  int final_sync_done;
  int file_closed;
  int handles_open;
  uint64_t synced_bytes; /* bytes_written when the last fdatasync started */
  int64_t file_offset;   /* where the next batch goes */
  int64_t good_end;      /* end of the whole records written without a gap; the file is cut here on error */
  int truncated;
  int cutting;          /* the fstat or ftruncate of the cut is running */
  uint64_t append_tail; /* O_APPEND: bytes of a failed batch past its last whole record */
  uv_fs_t cut_req;
  int open_error;     /* an open libuv refused to queue, not reported yet */
  struct slot *slots; /* FIFO of opts.max_writes_in_flight requests */
  unsigned oldest;
  unsigned in_flight;                /* slots in use (writing or done but not yet released) */
  int backlog;                       /* a drain found every slot busy with records left to take */
  struct pirec_ring_record *scratch; /* IOV_PER_WRITE records from one take */
  pirec_sink_close_cb close_cb;
  void *close_user;
  uint64_t chunks;    /* transform: chunks started */
  uint64_t plain_end; /* transform: the records' bytes in the whole chunks of good_end */
  int final_queued;   /* transform: the final chunk is queued */
};

static void drain(struct pirec_sink *sink);
static void continue_close(struct pirec_sink *sink);
static void maybe_cut(struct pirec_sink *sink);

void pirec_sink_options_default(struct pirec_sink_options *opts)
{
  memset(opts, 0, sizeof(*opts));
  opts->ring_bytes = 8u << 20;
  opts->batch_bytes = 1u << 20;
  opts->max_writes_in_flight = 2;
  opts->fsync_interval_ms = 1000;
  opts->wake_bytes = 64u << 10;
  opts->drain_interval_ms = 10;
  opts->open_flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  opts->mode = 0644;
}

unsigned pirec_sink_fsync_interval_ms(int64_t interval_ns)
{
  if (interval_ns <= 0)
    return PIREC_SINK_FSYNC_NEVER;
  int64_t ms = (interval_ns + 999999) / 1000000;
  return ms > UINT32_MAX ? UINT32_MAX : (unsigned)ms;
}

static void add_u64(_Atomic uint64_t *counter, uint64_t n)
{
  /* Only the loop thread writes these; other threads only read them. */
  atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static void enter_error(struct pirec_sink *sink, int err, const char *what, int64_t offset)
{
  if (sink->error_reported)
    return;
  sink->error_reported = 1;
  /* Release: a producer that sees the error also sees the state before it. */
  atomic_store_explicit(&sink->error, err, memory_order_release);
  if (offset >= 0)
    pirec_log(PIREC_LOG_ERROR, "cannot %s '%s' at offset %lld: %s; the sink stops writing", what, sink->path,
              (long long)offset, pirec_strerror(err));
  else
    pirec_log(PIREC_LOG_ERROR, "cannot %s '%s': %s; the sink stops writing", what, sink->path,
              pirec_strerror(err));
  if (sink->on_error)
    sink->on_error(sink, err, sink->user);
}

/* ---- creation ---- */

static void on_drain_timer(uv_timer_t *timer);

/* The drain timer fires on multiples of the interval of the loop's clock, not one interval after
 * the sink was created: every sink of a loop with the same interval then drains in the same loop
 * iteration, one wake-up for all of them instead of one each (a recorder has four to six sinks). */
static void arm_drain_timer(struct pirec_sink *sink)
{
  uint64_t interval = sink->opts.drain_interval_ms;
  uv_timer_start(&sink->drain_timer, on_drain_timer, interval - uv_now(sink->loop) % interval, 0);
}

static void on_open(uv_fs_t *req);
static void on_async(uv_async_t *handle);
static void on_sync_timer(uv_timer_t *timer);

/* The caller's options over the defaults: a zero field keeps the default, except fsync_interval_ms
 * (0 is "never"). Returns 0, or -EINVAL for options the sink cannot work with. */
static int merge_options(const struct pirec_sink_options *opts, struct pirec_sink_options *o)
{
  pirec_sink_options_default(o);
  if (opts != NULL) {
    if (opts->ring_bytes)
      o->ring_bytes = opts->ring_bytes;
    if (opts->batch_bytes)
      o->batch_bytes = opts->batch_bytes;
    if (opts->max_writes_in_flight)
      o->max_writes_in_flight = opts->max_writes_in_flight;
    o->fsync_interval_ms = opts->fsync_interval_ms; /* 0 is "never", not "the default" */
    if (opts->wake_bytes)
      o->wake_bytes = opts->wake_bytes;
    if (opts->drain_interval_ms)
      o->drain_interval_ms = opts->drain_interval_ms;
    if (opts->open_flags)
      o->open_flags = opts->open_flags;
    if (opts->mode)
      o->mode = opts->mode;
    o->mkdir_mode = opts->mkdir_mode;
    o->transform = opts->transform;
  }
  if (o->ring_bytes < 4096 || o->max_writes_in_flight > MAX_WRITES_IN_FLIGHT ||
      (o->open_flags & O_ACCMODE) == O_RDONLY)
    return -EINVAL;
  return 0;
}

/* Frees the sink's memory (not its handles): after a failed creation, and in the last close callback. */
static void free_memory(struct pirec_sink *sink)
{
  pirec_ring_free(sink->ring);
  if (sink->slots != NULL)
    for (unsigned i = 0; i < sink->opts.max_writes_in_flight; i++)
      free(sink->slots[i].bufs), free(sink->slots[i].stage), free(sink->slots[i].ends),
          free(sink->slots[i].tin), free(sink->slots[i].tout);
  free(sink->slots);
  if (sink->tf.free)
    sink->tf.free(sink->tf.ctx);
  free(sink->scratch);
  free(sink->path);
  free(sink);
}

/* The sink's memory: the value itself, its write slots and its ring. Returns 0 or -ENOMEM. */
static int alloc_sink(const char *path, const struct pirec_sink_options *o, struct pirec_sink **out)
{
  struct pirec_sink *sink = aligned_alloc(64, (sizeof(*sink) + 63) / 64 * 64);
  if (sink == NULL)
    return -ENOMEM;
  memset(sink, 0, sizeof(*sink));
  sink->opts = *o;
  sink->fd = -1;
  sink->append = (o->open_flags & O_APPEND) != 0;
  if (sink->append || o->transform)
    sink->opts.max_writes_in_flight = 1;
  atomic_init(&sink->loop_seen, 0);
  sink->woke_at = UINT64_MAX;
  atomic_init(&sink->error, 0);
  atomic_init(&sink->bytes_written, 0);
  atomic_init(&sink->writes, 0);
  atomic_init(&sink->syncs, 0);
  sink->path = strdup(path);
  sink->slots = calloc(sink->opts.max_writes_in_flight, sizeof(*sink->slots));
  sink->scratch = calloc(IOV_PER_WRITE, sizeof(*sink->scratch));
  int err = sink->path == NULL || sink->slots == NULL || sink->scratch == NULL ? -ENOMEM : 0;
  for (unsigned i = 0; err == 0 && i < sink->opts.max_writes_in_flight; i++) {
    sink->slots[i].sink = sink;
    sink->slots[i].bufs = calloc(IOV_PER_WRITE, sizeof(uv_buf_t));
    if (sink->slots[i].bufs == NULL)
      err = -ENOMEM;
  }
  if (err == 0)
    err = pirec_ring_new(o->ring_bytes, &sink->ring);
  if (err < 0) {
    free_memory(sink);
    return err;
  }
  *out = sink;
  return 0;
}

static void opened(struct pirec_sink *sink, int result);

/* Threadpool: the parent directory, then the file. */
static void open_work(uv_work_t *work)
{
  struct pirec_sink *sink = container_of(work, struct pirec_sink, open_work);
  struct pirec_fs_req req;
  char *dir = strdup(sink->path);
  char *slash = dir ? strrchr(dir, '/') : NULL;
  int r = dir ? 0 : -ENOMEM;

  if (slash && slash != dir) {
    *slash = '\0';
    r = pirec_fs_mkdir_p(NULL, &req, dir, (mode_t)sink->opts.mkdir_mode, NULL);
    pirec_fs_req_cleanup(&req);
  }
  free(dir);
  if (r == 0) {
    r = open(sink->path, sink->opts.open_flags, sink->opts.mode);
    if (r < 0)
      r = -errno;
  }
  sink->open_result = r;
}

static void open_work_done(uv_work_t *work, int status)
{
  struct pirec_sink *sink = container_of(work, struct pirec_sink, open_work);
  opened(sink, status < 0 ? status : sink->open_result);
}

/* Queues the open. A failure to queue is not returned: pushes fail from now on, and the error
 * callback runs from the loop (the first drain or the close), never before pirec_sink_new returns. */
static void start_open(struct pirec_sink *sink)
{
  int err;

  sink->opening = 1;
  if (sink->opts.mkdir_mode) {
    err = uv_queue_work(sink->loop, &sink->open_work, open_work, open_work_done);
    if (err < 0) {
      sink->opening = 0;
      sink->open_error = err;
      atomic_store_explicit(&sink->error, err, memory_order_release);
    }
    return;
  }
  err = uv_fs_open(sink->loop, &sink->open_req, sink->path, sink->opts.open_flags, sink->opts.mode, on_open);
  if (err < 0) {
    sink->opening = 0;
    uv_fs_req_cleanup(&sink->open_req);
    sink->open_error = err;
    atomic_store_explicit(&sink->error, err, memory_order_release);
  }
}

int pirec_sink_new(uv_loop_t *loop, const char *path, const struct pirec_sink_options *opts,
                   pirec_sink_error_cb on_error, void *user, struct pirec_sink **out)
{
  struct pirec_sink_options o;
  struct pirec_sink *sink;
  int err = loop == NULL || path == NULL || out == NULL ? -EINVAL : merge_options(opts, &o);
  if (err == 0)
    err = alloc_sink(path, &o, &sink);
  const struct pirec_sink_transform *tf = opts ? opts->transform : NULL;
  if (err < 0 && tf && tf->free)
    tf->free(tf->ctx);
  if (err < 0)
    return err;
  if (tf)
    sink->tf = *tf;
  sink->loop = loop;
  sink->on_error = on_error;
  sink->user = user;

  /* From here on nothing can fail except the open itself, which is reported through on_error, so
   * the handles are started only now and never need undoing on a failed return. */
  err = uv_async_init(loop, &sink->async, on_async);
  if (err < 0) {
    free_memory(sink);
    return err;
  }
  uv_timer_init(loop, &sink->drain_timer);
  uv_timer_init(loop, &sink->sync_timer);
  sink->handles_open = 3;
  arm_drain_timer(sink);
  if (o.fsync_interval_ms != PIREC_SINK_FSYNC_NEVER)
    uv_timer_start(&sink->sync_timer, on_sync_timer, o.fsync_interval_ms, o.fsync_interval_ms);
  start_open(sink);
  *out = sink;
  return 0;
}

static void on_open(uv_fs_t *req)
{
  struct pirec_sink *sink = container_of(req, struct pirec_sink, open_req);
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  opened(sink, result);
}

static void opened(struct pirec_sink *sink, int result)
{
  sink->opening = 0;
  if (result < 0) {
    enter_error(sink, result, "open", -1);
  } else {
    sink->fd = result;
    sink->file_offset = sink->append ? -1 : 0;
  }
  if (sink->closing)
    continue_close(sink);
  else
    drain(sink);
}

/* ---- producer side ---- */

static void note_pushed(struct pirec_sink *sink, size_t len)
{
  sink->producer_bytes += len;
  /* A relaxed load of a line the loop writes once per drain: no read-modify-write on a push. The
   * loop is woken once per drain it has done (woke_at), so a held or busy sink is not woken over
   * and over; the next drain moves loop_seen and re-arms the wake. */
  uint64_t seen = atomic_load_explicit(&sink->loop_seen, memory_order_relaxed);
  if (sink->producer_bytes > seen && sink->producer_bytes - seen >= sink->opts.wake_bytes &&
      seen != sink->woke_at) {
    sink->woke_at = seen;
    uv_async_send(&sink->async);
  }
}

/* A sink in error refuses data: counts the drop and returns the error; 0 while it is healthy. */
static int refuse_if_failed(struct pirec_sink *sink)
{
  int err = atomic_load_explicit(&sink->error, memory_order_acquire);
  if (err != 0)
    pirec_ring_count_drop(sink->ring);
  return err;
}

int pirec_sink_push(struct pirec_sink *sink, const void *data, size_t len)
{
  int err = refuse_if_failed(sink);
  if (err != 0)
    return err;
  err = pirec_ring_push(sink->ring, data, len);
  if (err == 0)
    note_pushed(sink, len);
  return err;
}

int pirec_sink_reserve(struct pirec_sink *sink, size_t max_len, void **out)
{
  sink->reserved_max = 0;
  int err = refuse_if_failed(sink);
  if (err != 0)
    return err;
  err = pirec_ring_reserve(sink->ring, max_len, out);
  if (err == 0)
    sink->reserved_max = max_len;
  return err;
}

void pirec_sink_commit(struct pirec_sink *sink, size_t len)
{
  /* A commit without a successful reserve publishes nothing; only count what the ring took. */
  size_t max = sink->reserved_max;
  sink->reserved_max = 0;
  if (len > max)
    len = max;
  pirec_ring_commit(sink->ring, len);
  if (len > 0)
    note_pushed(sink, len);
}

void pirec_sink_count_drop(struct pirec_sink *sink)
{
  pirec_ring_count_drop(sink->ring);
}

/* ---- loop side: writing ---- */

static void on_write(uv_fs_t *req);
static void submit_transformed(struct slot *slot);
static void retire(struct pirec_sink *sink);

/* After a write request has finished: space back to the ring, then the next step. */
static void write_finished(struct pirec_sink *sink)
{
  retire(sink);
  /* A completion drains again only for records that waited for a free slot (a backlog of frames,
   * or rows past wake_bytes): rows that trickle in while a write runs wait for the drain timer, so
   * they go out in one batch per interval instead of one write per completion. */
  if (sink->closing)
    continue_close(sink);
  else if (sink->backlog)
    drain(sink);
}

static void submit(struct slot *slot)
{
  struct pirec_sink *sink = slot->sink;
  if (sink->tf.apply) {
    submit_transformed(slot);
    return;
  }
  int64_t offset = slot->offset < 0 ? -1 : slot->offset + (int64_t)slot->done_bytes;
  slot->state = SLOT_WRITING;
  int err = uv_fs_write(sink->loop, &slot->req, sink->fd, slot->bufs + slot->first, slot->nbufs - slot->first,
                        offset, on_write);
  if (err < 0) {
    /* Not queued (only out of memory can do this): the batch is finished, unwritten. */
    uv_fs_req_cleanup(&slot->req);
    slot->state = SLOT_DONE;
    enter_error(sink, err, "write", offset);
  }
}

/* The bytes of the batch's records that were written whole. */
static size_t whole_bytes(const struct slot *slot)
{
  if (slot->done_bytes >= slot->bytes)
    return slot->bytes;
  if (slot->ends_lost || slot->sink->tf.apply)
    return 0;
  size_t lo = 0, hi = slot->nends; /* the number of record ends <= done_bytes, by bisection */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (slot->ends[mid] <= slot->done_bytes)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 ? slot->ends[lo - 1] : 0;
}

/* Gives ring space back for the oldest batches whose writes have completed, in order, so a batch
 * that completes early never frees space an older, still running write reads from. */
static void retire(struct pirec_sink *sink)
{
  unsigned max = sink->opts.max_writes_in_flight;
  int64_t good_before = sink->good_end;
  while (sink->in_flight > 0) {
    struct slot *slot = &sink->slots[sink->oldest];
    if (slot->state != SLOT_DONE)
      break;
    if (slot->records > 0)
      pirec_ring_release_to(sink->ring, slot->records, slot->ring_end);
    /* Batches retire in file order, so the prefix grows until the first incomplete batch, and
     * within that one up to its last whole record. */
    if (slot->offset >= 0 && slot->offset == sink->good_end) {
      size_t whole = whole_bytes(slot);
      sink->good_end += (int64_t)whole;
      if (sink->tf.apply && whole == slot->bytes)
        sink->plain_end += slot->plain;
    } else if (slot->offset < 0)
      sink->append_tail += slot->done_bytes - whole_bytes(slot);
    slot->state = SLOT_FREE;
    sink->oldest = (sink->oldest + 1) % max;
    sink->in_flight--;
  }
  if (sink->good_end != good_before && sink->on_written)
    sink->on_written(sink, pirec_sink_whole_end(sink), sink->user);
  maybe_cut(sink);
}

static void on_write(uv_fs_t *req)
{
  struct slot *slot = container_of(req, struct slot, req);
  struct pirec_sink *sink = slot->sink;
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  add_u64(&sink->writes, 1);

  if (result < 0) {
    slot->state = SLOT_DONE;
    enter_error(sink, (int)result, "write", slot->offset < 0 ? -1 : slot->offset + (int64_t)slot->done_bytes);
  } else {
    add_u64(&sink->bytes_written, (uint64_t)result);
    slot->done_bytes += (size_t)result;
    if (slot->done_bytes < slot->bytes && sink->error_reported) {
      slot->state = SLOT_DONE;
    } else if (slot->done_bytes < slot->bytes) {
      if (result == 0) {
        /* The kernel accepted nothing and said nothing; retrying would spin. */
        slot->state = SLOT_DONE;
        enter_error(sink, -EIO, "write", slot->offset + (int64_t)slot->done_bytes);
      } else {
        /* Short write: skip what went out and write the rest at the following offset. */
        size_t skip = (size_t)result;
        while (skip > 0 && skip >= slot->bufs[slot->first].len) {
          skip -= slot->bufs[slot->first].len;
          slot->first++;
        }
        slot->bufs[slot->first].base += skip;
        slot->bufs[slot->first].len -= skip;
        submit(slot);
      }
    } else {
      slot->state = SLOT_DONE;
    }
  }
  write_finished(sink);
}

static void report_open_error(struct pirec_sink *sink)
{
  if (sink->open_error) {
    int err = sink->open_error;
    sink->open_error = 0;
    enter_error(sink, err, "open", -1);
  }
}

/* Appends one taken record to the batch: copied into the stage (extending the stage's last iovec when
 * it is the batch's last) when small and there is room, else an iovec of its own. */
static void batch_add(struct slot *slot, const struct pirec_ring_record *rec)
{
  size_t len = rec->len;
  if (len == 0)
    return;
  if (!slot->ends_lost && slot->nends == slot->ends_cap) {
    size_t cap = slot->ends_cap ? 2 * slot->ends_cap : 1024;
    size_t *e = realloc(slot->ends, cap * sizeof *e);
    if (e == NULL)
      slot->ends_lost = 1;
    else
      slot->ends = e, slot->ends_cap = cap;
  }
  slot->bytes += len;
  if (!slot->ends_lost)
    slot->ends[slot->nends++] = slot->bytes;
  if (len <= COALESCE_MAX && slot->stage && STAGE_BYTES - slot->staged >= len) {
    char *dst = slot->stage + slot->staged;
    memcpy(dst, rec->data, len);
    slot->staged += len;
    uv_buf_t *last = slot->nbufs ? &slot->bufs[slot->nbufs - 1] : NULL;
    if (last && last->base + last->len == dst)
      last->len += (unsigned)len;
    else
      slot->bufs[slot->nbufs++] = uv_buf_init(dst, (unsigned)len);
    return;
  }
  slot->bufs[slot->nbufs++] = uv_buf_init(rec->data, (unsigned)len);
}

/* Takes records into the slot's batch until the iovecs, batch_bytes or the stage run out, or the
 * ring has nothing more. Returns the number of records the batch covers (0: nothing to write). */
static size_t fill_batch(struct pirec_sink *sink, struct slot *slot)
{
  slot->nends = 0;
  slot->ends_lost = 0;
  slot->nbufs = 0;
  slot->records = 0;
  slot->bytes = 0;
  slot->staged = 0;
  for (;;) {
    /* One iovec per record at worst, so never take more records than iovecs are left. */
    size_t room = IOV_PER_WRITE - slot->nbufs;
    size_t n = pirec_ring_take(sink->ring, sink->scratch, room, sink->opts.batch_bytes - slot->bytes);
    if (n == 0)
      break;
    if (!slot->stage && sink->scratch[0].len <= COALESCE_MAX) {
      slot->stage = malloc(STAGE_BYTES); /* NULL is harmless: records go zero-copy */
    }
    for (size_t i = 0; i < n; i++)
      batch_add(slot, &sink->scratch[i]);
    slot->records += n;
    /* Another take only pays while the last one filled its records' worth of room and the stage
     * can still absorb rows; otherwise write what we have and let the next slot continue. */
    if (n < room || slot->nbufs == IOV_PER_WRITE || slot->bytes >= sink->opts.batch_bytes || !slot->stage ||
        STAGE_BYTES - slot->staged < COALESCE_MAX)
      break;
  }
  slot->ring_end = pirec_ring_take_cursor(sink->ring);
  return slot->records;
}

/* ---- loop side: the optional transform ---- */

/* The chunk the slot's batch becomes: its index and its size in the file. */
static size_t transform_size(struct pirec_sink *sink, struct slot *slot, int final)
{
  slot->plain = slot->bytes;
  slot->final = final;
  slot->chunk = sink->chunks++;
  return sink->tf.size(sink->tf.ctx, slot->chunk, slot->plain);
}

static int grow_buf(unsigned char **buf, size_t *cap, size_t n)
{
  if (n <= *cap)
    return 0;
  unsigned char *b = realloc(*buf, n);
  if (b == NULL)
    return -ENOMEM;
  *buf = b, *cap = n;
  return 0;
}

/* Threadpool: gathers the batch, transforms it, writes the chunk whole (retrying short writes). */
static void transform_work(uv_work_t *work)
{
  struct slot *slot = container_of(work, struct slot, work);
  struct pirec_sink *sink = slot->sink;
  size_t at = 0;
  for (unsigned i = 0; i < slot->nbufs; i++) {
    memcpy(slot->tin + at, slot->bufs[i].base, slot->bufs[i].len);
    at += slot->bufs[i].len;
  }
  slot->t_written = 0;
  slot->t_err = sink->tf.apply(sink->tf.ctx, slot->chunk, slot->tin, slot->plain, slot->final, slot->tout);
  while (slot->t_err == 0 && slot->t_written < slot->bytes) {
    const unsigned char *p = slot->tout + slot->t_written;
    size_t n = slot->bytes - slot->t_written;
    ssize_t k = slot->offset < 0 ? write(sink->fd, p, n)
                                 : pwrite(sink->fd, p, n, (off_t)(slot->offset + (int64_t)slot->t_written));
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      slot->t_err = k < 0 ? -errno : -EIO;
    else
      slot->t_written += (size_t)k;
  }
}

static void transform_done(uv_work_t *work, int status)
{
  struct slot *slot = container_of(work, struct slot, work);
  struct pirec_sink *sink = slot->sink;
  add_u64(&sink->writes, 1);
  add_u64(&sink->bytes_written, slot->t_written);
  slot->done_bytes = slot->t_written;
  slot->state = SLOT_DONE;
  int err = status < 0 ? status : slot->t_err;
  if (err < 0)
    enter_error(sink, err, "write", slot->offset < 0 ? -1 : slot->offset + (int64_t)slot->t_written);
  write_finished(sink);
}

static void submit_transformed(struct slot *slot)
{
  struct pirec_sink *sink = slot->sink;
  int err = grow_buf(&slot->tin, &slot->tin_cap, slot->plain ? slot->plain : 1);
  if (err == 0)
    err = grow_buf(&slot->tout, &slot->tout_cap, slot->bytes);
  slot->state = SLOT_WRITING;
  if (err == 0)
    err = uv_queue_work(sink->loop, &slot->work, transform_work, transform_done);
  if (err < 0) {
    slot->state = SLOT_DONE;
    enter_error(sink, err, "write", slot->offset);
  }
}

/* Close: the stream's last chunk, of no records. Returns 1 when one was queued. */
static int queue_final_chunk(struct pirec_sink *sink)
{
  if (!sink->tf.apply || sink->final_queued || sink->in_flight > 0)
    return 0;
  sink->final_queued = 1;
  struct slot *slot = &sink->slots[sink->oldest];
  slot->nbufs = 0, slot->records = 0, slot->bytes = 0, slot->nends = 0, slot->first = 0, slot->done_bytes = 0;
  slot->bytes = transform_size(sink, slot, 1);
  slot->offset = sink->file_offset;
  if (!sink->append)
    sink->file_offset += (int64_t)slot->bytes;
  sink->in_flight++;
  submit_transformed(slot);
  if (slot->state == SLOT_WRITING)
    return 1;
  retire(sink);
  return 0;
}

static void drain(struct pirec_sink *sink)
{
  report_open_error(sink);
  /* Note how far the producer got before taking: bytes pushed after this point wake the loop
   * again, bytes pushed before it are in the ring already and are taken below. Noted even when
   * nothing can be written (held, still opening, failed): the loop has looked, and a wake-up now
   * would only cost the producer a system call. The ring's byte count is the producer's (every
   * accepted push goes through note_pushed). */
  struct pirec_ring_stats st;
  pirec_ring_stats(sink->ring, &st);
  if (atomic_load_explicit(&sink->loop_seen, memory_order_relaxed) != st.bytes_pushed)
    atomic_store_explicit(&sink->loop_seen, st.bytes_pushed, memory_order_relaxed);
  if (sink->fd < 0 || sink->error_reported || sink->held)
    return;

  unsigned max = sink->opts.max_writes_in_flight;
  sink->backlog = 0;
  for (;;) {
    if (sink->in_flight == max) {
      sink->backlog = !pirec_ring_empty(sink->ring);
      break;
    }
    struct slot *slot = &sink->slots[(sink->oldest + sink->in_flight) % max];
    if (!fill_batch(sink, slot))
      break;
    size_t bytes = slot->bytes;
    slot->first = 0;
    slot->done_bytes = 0;
    if (sink->tf.apply)
      bytes = slot->bytes = transform_size(sink, slot, 0);
    slot->offset = sink->file_offset;
    if (!sink->append)
      sink->file_offset += (int64_t)bytes;
    sink->in_flight++;
    if (bytes == 0)
      slot->state = SLOT_DONE; /* only empty records: nothing to write */
    else
      submit(slot);
  }
  retire(sink);
}

static void on_async(uv_async_t *handle)
{
  struct pirec_sink *sink = container_of(handle, struct pirec_sink, async);
  const char *outer = pirec_looplag_op("drain");
  if (!sink->closing)
    drain(sink);
  pirec_looplag_op(outer);
}

static void on_drain_timer(uv_timer_t *timer)
{
  struct pirec_sink *sink = container_of(timer, struct pirec_sink, drain_timer);
  arm_drain_timer(sink);
  const char *outer = pirec_looplag_op("drain");
  if (!sink->closing)
    drain(sink);
  pirec_looplag_op(outer);
}

/* ---- loop side: syncing ---- */

static void on_sync(uv_fs_t *req)
{
  struct pirec_sink *sink = container_of(req, struct pirec_sink, sync_req);
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  sink->sync_busy = 0;
  if (result < 0) {
    enter_error(sink, result, "sync", -1);
    maybe_cut(sink);
  } else {
    add_u64(&sink->syncs, 1);
  }
  if (sink->closing)
    continue_close(sink);
}

static int start_sync(struct pirec_sink *sink)
{
  sink->synced_bytes = atomic_load_explicit(&sink->bytes_written, memory_order_relaxed);
  int err = uv_fs_fdatasync(sink->loop, &sink->sync_req, sink->fd, on_sync);
  if (err < 0) {
    uv_fs_req_cleanup(&sink->sync_req);
    enter_error(sink, err, "sync", -1);
    return err;
  }
  sink->sync_busy = 1;
  return 0;
}

static void on_sync_timer(uv_timer_t *timer)
{
  struct pirec_sink *sink = container_of(timer, struct pirec_sink, sync_timer);
  if (sink->fd < 0 || sink->sync_busy || sink->closing)
    return;
  if (atomic_load_explicit(&sink->bytes_written, memory_order_relaxed) == sink->synced_bytes)
    return;
  (void)start_sync(sink);
}

/* ---- loop side: other controls ---- */

void pirec_sink_flush(struct pirec_sink *sink)
{
  drain(sink);
}

void pirec_sink_hold(struct pirec_sink *sink, int hold)
{
  sink->held = hold != 0;
  if (!sink->held && !sink->closing)
    drain(sink);
}

void pirec_sink_counters(const struct pirec_sink *sink, struct pirec_sink_counters *out)
{
  struct pirec_ring_stats st;
  pirec_ring_stats(sink->ring, &st);
  out->records = st.pushed;
  out->drops = st.dropped;
  out->bytes_written = atomic_load_explicit(&sink->bytes_written, memory_order_relaxed);
  out->writes = atomic_load_explicit(&sink->writes, memory_order_relaxed);
  out->syncs = atomic_load_explicit(&sink->syncs, memory_order_relaxed);
  out->ring_used = st.used_bytes;
  out->ring_capacity = st.capacity;
  out->error = atomic_load_explicit(&sink->error, memory_order_acquire);
}

void pirec_sink_on_written(struct pirec_sink *sink, pirec_sink_written_cb cb)
{
  sink->on_written = cb;
}

uint64_t pirec_sink_whole_end(const struct pirec_sink *sink)
{
  /* With a transform, offsets in the records' terms: what a writer of the records computed. */
  return sink->tf.apply ? sink->plain_end : (uint64_t)sink->good_end;
}

const char *pirec_sink_path(const struct pirec_sink *sink)
{
  return sink->path;
}

/* ---- closing ---- */

static void on_cut(uv_fs_t *req)
{
  struct pirec_sink *sink = container_of(req, struct pirec_sink, cut_req);
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  sink->cutting = 0;
  uint64_t written = atomic_load_explicit(&sink->bytes_written, memory_order_relaxed);
  if (result == 0)
    atomic_store_explicit(&sink->bytes_written,
                          sink->append ? written - sink->append_tail : (uint64_t)sink->good_end,
                          memory_order_relaxed);
  else
    pirec_log(PIREC_LOG_ERROR, "cannot cut '%s' back to its last whole record at offset %lld: %s", sink->path,
              (long long)sink->good_end, pirec_strerror(result));
  if (sink->closing)
    continue_close(sink);
}

static void start_cut(struct pirec_sink *sink)
{
  if (uv_fs_ftruncate(sink->loop, &sink->cut_req, sink->fd, sink->good_end, on_cut) == 0) {
    sink->cutting = 1;
    return;
  }
  uv_fs_req_cleanup(&sink->cut_req);
}

/* O_APPEND: the file's size tells where the failed batch's whole records end. */
static void on_cut_stat(uv_fs_t *req)
{
  struct pirec_sink *sink = container_of(req, struct pirec_sink, cut_req);
  int result = (int)req->result;
  int64_t size = (int64_t)req->statbuf.st_size;
  uv_fs_req_cleanup(req);
  sink->cutting = 0;
  if (result == 0 && size >= (int64_t)sink->append_tail) {
    sink->good_end = size - (int64_t)sink->append_tail;
    start_cut(sink);
  }
  if (!sink->cutting && sink->closing)
    continue_close(sink);
}

/* After a failure, once no write is running, cuts the file back to the end of its last whole
 * record, so that a reader never meets half a row: a full disk leaves the rows that fit, whole.
 * With several writes in flight a later batch may also have landed after an earlier one failed;
 * the cut keeps its bytes (and the zeros before them) from passing for data. */
static void maybe_cut(struct pirec_sink *sink)
{
  if (sink->fd < 0 || !sink->error_reported || sink->truncated || sink->in_flight > 0 || sink->cutting)
    return;
  sink->truncated = 1;
  if (sink->append) {
    if (sink->append_tail == 0)
      return;
    if (uv_fs_fstat(sink->loop, &sink->cut_req, sink->fd, on_cut_stat) == 0)
      sink->cutting = 1;
    else
      uv_fs_req_cleanup(&sink->cut_req);
    return;
  }
  if (atomic_load_explicit(&sink->bytes_written, memory_order_relaxed) != (uint64_t)sink->good_end)
    start_cut(sink);
}

static void on_file_closed(uv_fs_t *req)
{
  struct pirec_sink *sink = container_of(req, struct pirec_sink, close_req);
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  sink->fd = -1;
  /* A close error on some file systems reports a failed writeback; it is the last word on the data. */
  if (result < 0)
    enter_error(sink, result, "close", -1);
  continue_close(sink);
}

static void on_handle_closed(uv_handle_t *handle)
{
  struct pirec_sink *sink = handle->data;
  if (--sink->handles_open > 0)
    return;
  struct pirec_sink_counters final;
  pirec_sink_counters(sink, &final);
  if (sink->close_cb)
    sink->close_cb(sink, &final, sink->close_user);
  free_memory(sink);
}

/* Each step either finishes synchronously or returns and is resumed from the callback of the
 * request it started (open, write, sync, close), so this runs until every step is done. */
static void continue_close(struct pirec_sink *sink)
{
  report_open_error(sink);
  if (sink->opening)
    return;
  if (sink->fd >= 0 && !sink->error_reported) {
    drain(sink);
    if (sink->in_flight > 0 || !pirec_ring_empty(sink->ring) || queue_final_chunk(sink))
      return;
  } else if (sink->in_flight > 0) {
    /* In the error state nothing new is written; wait for the writes already running. */
    retire(sink);
    if (sink->in_flight > 0)
      return;
  }
  maybe_cut(sink);
  if (sink->sync_busy || sink->cutting)
    return;
  if (sink->fd >= 0 && !sink->final_sync_done) {
    sink->final_sync_done = 1;
    if (start_sync(sink) == 0)
      return;
  }
  if (sink->fd >= 0 && !sink->file_closed) {
    sink->file_closed = 1;
    if (uv_fs_close(sink->loop, &sink->close_req, sink->fd, on_file_closed) == 0)
      return;
    uv_fs_req_cleanup(&sink->close_req);
    sink->fd = -1;
  }
  if (sink->fd >= 0 || sink->handles_open != 3 || uv_is_closing((uv_handle_t *)&sink->async))
    return;
  sink->async.data = sink;
  sink->drain_timer.data = sink;
  sink->sync_timer.data = sink;
  uv_close((uv_handle_t *)&sink->async, on_handle_closed);
  uv_close((uv_handle_t *)&sink->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&sink->sync_timer, on_handle_closed);
}

void pirec_sink_close(struct pirec_sink *sink, pirec_sink_close_cb cb, void *user)
{
  if (sink == NULL || sink->closing)
    return;
  sink->closing = 1;
  sink->held = 0;
  sink->close_cb = cb;
  sink->close_user = user;
  uv_timer_stop(&sink->drain_timer);
  uv_timer_stop(&sink->sync_timer);
  continue_close(sink);
}
