/* Raw media from C: alice's app pushes its own camera pictures (I420, left
 * half white, right half black, with a stride wider than a row) and
 * microphone samples (a 440 Hz tone) into a video call; bob's app gets the
 * pictures and the audio back decoded through callbacks, and checks them.
 * Also shows the push errors a capture loop meets.
 *
 * Usage: raw_media SERVER_URL SDK_APP_ID SECRET_KEY */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calling.h"

#define CHECK(call)                                                         \
  do {                                                                      \
    calling_result r_ = (call);                                             \
    if (r_ != CALLING_RESULT_OK) {                                          \
      fprintf(stderr, "%s failed: %s\n", #call, calling_result_text(r_));   \
      exit(1);                                                              \
    }                                                                       \
  } while (0)

#define W 640
#define H 360
#define STRIDE 704 /* wider than a row, as camera buffers often are */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* What bob's decoded callbacks saw; they run on decoder threads. */
static atomic_int pictures, good_pictures, audio_chunks;
static atomic_uint last_w, last_h;
static atomic_llong audio_energy; /* sum of squares, scaled */

static calling_client *bob_client;
static atomic_int reentry_checked, reentry_refused;

static void on_video(void *user_data, const calling_decoded_video *f) {
  (void)user_data;
  atomic_fetch_add(&pictures, 1);
  /* Blocking functions are refused on a decoder thread: they could wait
   * for this very thread. */
  if (!atomic_exchange(&reentry_checked, 1) &&
      calling_client_set_decoded_video_callback(bob_client, NULL, NULL) ==
          CALLING_RESULT_WRONG_THREAD &&
      calling_client_hangup(bob_client) == CALLING_RESULT_WRONG_THREAD)
    atomic_store(&reentry_refused, 1);
  atomic_store(&last_w, f->width);
  atomic_store(&last_h, f->height);
  /* The planes belong to the library and live only during this call:
   * read (or copy) them here. */
  const uint8_t *row = f->y + (size_t)(f->height / 2) * f->y_stride;
  if (row[f->width / 4] > 180 && row[3 * f->width / 4] < 60) atomic_fetch_add(&good_pictures, 1);
}

static void on_audio(void *user_data, const calling_decoded_audio *a) {
  (void)user_data;
  atomic_fetch_add(&audio_chunks, 1);
  double sum = 0;
  for (size_t i = 0; i < a->frames * a->channels; i++) sum += a->samples[i] * a->samples[i];
  atomic_fetch_add(&audio_energy, (long long)(sum * 1000.0));
}

/* Alice's capture thread: pictures at 15 fps, 10 ms audio chunks. */
static atomic_int stop_capture, pushed, refused_full;
static calling_client *alice_client;

static void *capture(void *arg) {
  (void)arg;
  static uint8_t y[STRIDE * H], u[(W / 2) * (H / 2)], v[(W / 2) * (H / 2)];
  for (int r = 0; r < H; r++)
    for (int x = 0; x < STRIDE; x++) y[r * STRIDE + x] = x < W / 2 ? 235 : 16;
  memset(u, 128, sizeof u);
  memset(v, 128, sizeof v);
  const uint8_t *planes[3] = {y, u, v};
  const size_t strides[3] = {STRIDE, W / 2, W / 2};
  int16_t pcm[480];
  double phase = 0;
  uint64_t start = now_us();
  for (int tick = 0; !atomic_load(&stop_capture); tick++) {
    for (int i = 0; i < 480; i++) {
      pcm[i] = (int16_t)(sin(phase) * 8000);
      phase += 2 * 3.14159265358979 * 440 / 48000;
    }
    calling_client_push_audio_i16(alice_client, pcm, 480, 1);
    if (tick % 7 == 0) { /* ~15 fps */
      calling_result r = calling_client_push_video(alice_client, CALLING_PIXEL_FORMAT_I420, W, H,
                                                   planes, strides, 3, now_us() - start);
      if (r == CALLING_RESULT_OK) atomic_fetch_add(&pushed, 1);
      if (r == CALLING_RESULT_QUEUE_FULL) atomic_fetch_add(&refused_full, 1);
    }
    sleep_ms(10);
  }
  return NULL;
}

static calling_client *login(const char *url, uint64_t app, const char *key, const char *user,
                             int raw) {
  calling_config *cfg = NULL;
  CHECK(calling_config_new(&cfg));
  CHECK(calling_config_set_server_url(cfg, url));
  CHECK(calling_config_set_sdk_app_id(cfg, app));
  CHECK(calling_config_set_udp_addrs(cfg, "127.0.0.1:0"));
  if (raw) {
    /* The camera and the microphone are the app's own pushes. */
    CHECK(calling_config_set_video_source(cfg, CALLING_VIDEO_SOURCE_RAW));
    CHECK(calling_config_set_audio_source(cfg, CALLING_AUDIO_SOURCE_RAW));
  }
  calling_client *c = NULL;
  CHECK(calling_client_new(cfg, &c));
  calling_config_free(cfg);
  char *sig = NULL;
  CHECK(calling_usersig_generate(app, key, user, 3600, &sig));
  CHECK(calling_client_login(c, user, sig));
  calling_string_free(sig);
  printf("[%s] logged in\n", user);
  return c;
}

static int wait_for(calling_client *c, calling_event_kind want, char *invite, size_t len) {
  for (int i = 0; i < 300; i++) { /* at most 30 s */
    calling_event *e = NULL;
    if (calling_client_wait_event(c, 100, &e) != CALLING_RESULT_OK) continue;
    int hit = e->kind == want;
    if (hit && invite && e->invite_id) snprintf(invite, len, "%s", e->invite_id);
    calling_event_free(e);
    if (hit) return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SERVER_URL SDK_APP_ID SECRET_KEY\n", argv[0]);
    return 2;
  }
  const char *url = argv[1];
  uint64_t app = strtoull(argv[2], NULL, 10);
  const char *key = argv[3];
  calling_client *alice = login(url, app, key, "alice", 1);
  calling_client *bob = login(url, app, key, "bob", 0);
  alice_client = alice;
  bob_client = bob;
  CHECK(calling_client_set_decoded_video_callback(bob, on_video, NULL));
  CHECK(calling_client_set_decoded_audio_callback(bob, on_audio, NULL));

  /* Before a call nothing takes the pushes; malformed pushes are refused. */
  static uint8_t tiny[64];
  const uint8_t *one[1] = {tiny};
  const size_t one_stride[1] = {16};
  int16_t pcm[4] = {0};
  if (calling_client_push_audio_i16(alice, pcm, 4, 1) != CALLING_RESULT_NOT_SENDING ||
      calling_client_push_video(alice, CALLING_PIXEL_FORMAT_RGBA, 2, 2, one, one_stride, 1, 0) !=
          CALLING_RESULT_NOT_SENDING ||
      calling_client_push_video(alice, CALLING_PIXEL_FORMAT_I420, 2, 2, one, one_stride, 1, 0) !=
          CALLING_RESULT_INVALID_ARGUMENT ||
      calling_client_push_video(alice, CALLING_PIXEL_FORMAT_RGBA, 8, 2, one, one_stride, 1, 0) !=
          CALLING_RESULT_INVALID_ARGUMENT ||
      calling_client_push_video(alice, 99, 2, 2, one, one_stride, 1, 0) !=
          CALLING_RESULT_INVALID_ARGUMENT ||
      calling_client_push_video(alice, CALLING_PIXEL_FORMAT_RGBA, 2, 2, NULL, one_stride, 1, 0) !=
          CALLING_RESULT_NULL_PARAMETER ||
      calling_client_push_audio_i16(alice, pcm, 3, 2) != CALLING_RESULT_INVALID_ARGUMENT ||
      calling_client_push_audio_f32(alice, NULL, 4, 1) != CALLING_RESULT_NULL_PARAMETER) {
    fprintf(stderr, "push errors are not as documented\n");
    return 1;
  }
  char *why = NULL;
  CHECK(calling_client_last_error(alice, &why));
  printf("push errors ok (last: %s)\n", why);
  calling_string_free(why);

  pthread_t capturer;
  pthread_create(&capturer, NULL, capture, NULL);
  char *call_id = NULL;
  CHECK(calling_client_call(alice, "bob", CALLING_MEDIA_TYPE_VIDEO, 30, &call_id));
  char invite[128] = {0};
  if (!wait_for(bob, CALLING_EVENT_INVITED, invite, sizeof invite)) {
    fprintf(stderr, "bob: no INVITED\n");
    return 1;
  }
  CHECK(calling_client_accept(bob, invite));
  for (int i = 0; i < 300; i++) { /* at most 30 s */
    if (atomic_load(&good_pictures) >= 15 && atomic_load(&audio_chunks) >= 50) break;
    sleep_ms(100);
  }
  atomic_store(&stop_capture, 1);
  pthread_join(capturer, NULL);
  printf("[alice] pushed %d pictures (%d dropped: encoder busy)\n", atomic_load(&pushed),
         atomic_load(&refused_full));
  printf("[bob] decoded %d pictures from alice, %d as sent, last %ux%u\n", atomic_load(&pictures),
         atomic_load(&good_pictures), atomic_load(&last_w), atomic_load(&last_h));
  printf("[bob] decoded %d audio chunks from alice, energy %lld\n", atomic_load(&audio_chunks),
         (long long)atomic_load(&audio_energy));
  printf("[bob] blocking calls inside a decoded callback refused: %s\n",
         atomic_load(&reentry_refused) ? "yes" : "no");
  int ok = atomic_load(&reentry_refused) && atomic_load(&good_pictures) >= 15 && atomic_load(&audio_chunks) >= 50 &&
           atomic_load(&audio_energy) > 0 && atomic_load(&last_w) == W && atomic_load(&last_h) == H;

  CHECK(calling_client_hangup(alice));
  wait_for(bob, CALLING_EVENT_CALL_END, NULL, 0);
  calling_string_free(call_id);
  CHECK(calling_client_logout(alice));
  CHECK(calling_client_logout(bob));
  calling_client_free(alice);
  calling_client_free(bob);
  if (!ok) {
    fprintf(stderr, "decoded media is not what alice pushed\n");
    return 1;
  }
  printf("done\n");
  return 0;
}
