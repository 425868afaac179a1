/* A real call from C: two clients log in to a calling-server, alice calls
 * bob with video, bob answers, both receive audio and video frames, alice
 * hangs up. Alice gets her events through a callback (on a library thread),
 * bob polls for his on the main thread.
 *
 * Usage: call SERVER_URL SDK_APP_ID SECRET_KEY
 * (the secret key signs the UserSigs here for the demo; a real app gets
 * its UserSig from its own backend). */
#define _POSIX_C_SOURCE 200809L
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

static const char *kind_name(calling_event_kind kind) {
  switch (kind) {
  case CALLING_EVENT_INVITED: return "INVITED";
  case CALLING_EVENT_REJECTED: return "REJECTED";
  case CALLING_EVENT_NO_RESPONSE: return "NO_RESPONSE";
  case CALLING_EVENT_LINE_BUSY: return "LINE_BUSY";
  case CALLING_EVENT_CALLING_CANCEL: return "CALLING_CANCEL";
  case CALLING_EVENT_CALLING_TIMEOUT: return "CALLING_TIMEOUT";
  case CALLING_EVENT_USER_ENTER: return "USER_ENTER";
  case CALLING_EVENT_USER_LEAVE: return "USER_LEAVE";
  case CALLING_EVENT_CALL_END: return "CALL_END";
  case CALLING_EVENT_KICKED_OUT: return "KICKED_OUT";
  case CALLING_EVENT_LOGIN_EXPIRED: return "LOGIN_EXPIRED";
  case CALLING_EVENT_DISCONNECTED: return "DISCONNECTED";
  case CALLING_EVENT_RECONNECTED: return "RECONNECTED";
  case CALLING_EVENT_USER_VIDEO_AVAILABLE: return "USER_VIDEO_AVAILABLE";
  case CALLING_EVENT_USER_AUDIO_AVAILABLE: return "USER_AUDIO_AVAILABLE";
  case CALLING_EVENT_USER_VOICE_VOLUME: return "USER_VOICE_VOLUME";
  case CALLING_EVENT_ERROR: return "ERROR";
  case CALLING_EVENT_MEDIA_TYPE_CHANGED: return "MEDIA_TYPE_CHANGED";
  case CALLING_EVENT_MEDIA_TYPE_SWITCH_REQUESTED: return "MEDIA_TYPE_SWITCH_REQUESTED";
  case CALLING_EVENT_MEDIA_TYPE_SWITCH_REFUSED: return "MEDIA_TYPE_SWITCH_REFUSED";
  case CALLING_EVENT_INVITEE_LIST_UPDATED: return "INVITEE_LIST_UPDATED";
  case CALLING_EVENT_GLARE_RESOLVED: return "GLARE_RESOLVED";
  default: return "UNKNOWN";
  }
}

/* Both threads print; one line at a time. */
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static void print_event(const char *who, const calling_event *e) {
  if (e->kind == CALLING_EVENT_USER_VOICE_VOLUME) return; /* too chatty */
  pthread_mutex_lock(&print_lock);
  printf("[%s] %s", who, kind_name(e->kind));
  if (e->user) printf(" %s", e->user);
  if (e->call_id) printf(" call=%s", e->call_id);
  if (e->kind == CALLING_EVENT_CALL_END)
    printf(" reason=%u duration_ms=%llu", (unsigned)e->end_reason,
           (unsigned long long)e->duration_ms);
  if (e->kind == CALLING_EVENT_USER_VIDEO_AVAILABLE ||
      e->kind == CALLING_EVENT_USER_AUDIO_AVAILABLE)
    printf(" available=%d", e->available);
  printf("\n");
  fflush(stdout);
  pthread_mutex_unlock(&print_lock);
}

/* Alice's callback runs on a library thread: it only records and prints. */
static atomic_int alice_entered;
static atomic_int alice_ended;

static void on_alice_event(void *user_data, const calling_event *e) {
  (void)user_data;
  print_event("alice", e);
  if (e->kind == CALLING_EVENT_USER_ENTER) atomic_store(&alice_entered, 1);
  if (e->kind == CALLING_EVENT_CALL_END) atomic_store(&alice_ended, 1);
}

/* Bob also receives the encoded frames themselves. */
static atomic_ullong bob_video_bytes;
static atomic_int bob_keyframes;

static void on_bob_frame(void *user_data, const calling_frame *f) {
  (void)user_data;
  if (f->kind == CALLING_MEDIA_KIND_VIDEO) {
    atomic_fetch_add(&bob_video_bytes, f->len);
    if (f->keyframe) atomic_fetch_add(&bob_keyframes, 1);
  }
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static calling_client *login(const char *url, uint64_t app, const char *key,
                             const char *user) {
  /* The config is a builder: set what differs from the defaults, make the
   * client (which copies it), free it. */
  calling_config *cfg = NULL;
  CHECK(calling_config_new(&cfg));
  CHECK(calling_config_set_server_url(cfg, url));
  CHECK(calling_config_set_sdk_app_id(cfg, app));
  /* Both users run in this process: media stays on loopback. Leave this
   * out between machines (the default binds every interface). */
  CHECK(calling_config_set_udp_addrs(cfg, "127.0.0.1:0"));
  calling_client *c = NULL;
  CHECK(calling_client_new(cfg, &c));
  calling_config_free(cfg);
  char *sig = NULL;
  CHECK(calling_usersig_generate(app, key, user, 3600, &sig));
  CHECK(calling_usersig_verify(app, key, user, sig));
  calling_result r = calling_client_login(c, user, sig);
  calling_string_free(sig);
  if (r != CALLING_RESULT_OK) {
    /* The result says what kind of failure; the last error says why. */
    char *why = NULL;
    calling_client_last_error(c, &why);
    fprintf(stderr, "[%s] login failed: %s (%s)\n", user, calling_result_text(r),
            why ? why : "");
    calling_string_free(why);
    calling_client_free(c);
    exit(1);
  }
  printf("[%s] logged in\n", user);
  return c;
}

/* Bob's loop: wait (bounded) for an event of `want`, printing all events;
 * copy the invite id of an INVITED into invite_out. */
static int bob_wait(calling_client *bob, calling_event_kind want,
                    char *invite_out, size_t invite_len) {
  for (int i = 0; i < 300; i++) { /* at most 30 s */
    calling_event *e = NULL;
    if (calling_client_wait_event(bob, 100, &e) != CALLING_RESULT_OK) continue;
    print_event("bob", e);
    int hit = e->kind == want;
    if (hit && invite_out && e->invite_id)
      snprintf(invite_out, invite_len, "%s", e->invite_id);
    calling_event_free(e);
    if (hit) return 1;
  }
  fprintf(stderr, "bob: no %s\n", kind_name(want));
  return 0;
}

static uint64_t frames(calling_client *c, const char *from, calling_media_kind kind) {
  uint64_t n = 0;
  CHECK(calling_client_frames_received(c, from, kind, &n));
  return n;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SERVER_URL SDK_APP_ID SECRET_KEY\n", argv[0]);
    return 2;
  }
  const char *url = argv[1];
  uint64_t app = strtoull(argv[2], NULL, 10);
  const char *key = argv[3];
  printf("calling %s\n", calling_version());
  /* The header this was compiled with and the library it runs with must be
   * the same version. */
  if (strcmp(calling_version(), CALLING_VERSION_STRING) != 0) {
    fprintf(stderr, "built with calling.h %s, running with the library %s\n",
            CALLING_VERSION_STRING, calling_version());
    return 1;
  }

  calling_client *alice = login(url, app, key, "alice");
  calling_client *bob = login(url, app, key, "bob");
  CHECK(calling_client_set_event_callback(alice, on_alice_event, NULL));
  CHECK(calling_client_set_frame_callback(bob, on_bob_frame, NULL));

  char *call_id = NULL;
  CHECK(calling_client_call(alice, "bob", CALLING_MEDIA_TYPE_VIDEO, 30, &call_id));
  printf("[alice] calling bob, call=%s\n", call_id);

  char invite[128] = {0};
  if (!bob_wait(bob, CALLING_EVENT_INVITED, invite, sizeof invite)) return 1;
  CHECK(calling_client_accept(bob, invite));
  if (!bob_wait(bob, CALLING_EVENT_USER_ENTER, NULL, 0)) return 1;
  for (int i = 0; i < 300 && !atomic_load(&alice_entered); i++) sleep_ms(100);
  if (!atomic_load(&alice_entered)) {
    fprintf(stderr, "alice: no USER_ENTER\n");
    return 1;
  }

  /* Media: wait until both sides have a second or so of audio and video. */
  int ok = 0;
  for (int i = 0; i < 300 && !ok; i++) { /* at most 30 s */
    ok = frames(alice, "bob", CALLING_MEDIA_KIND_VIDEO) >= 15 &&
         frames(alice, "bob", CALLING_MEDIA_KIND_AUDIO) >= 25 &&
         frames(bob, "alice", CALLING_MEDIA_KIND_VIDEO) >= 15 &&
         frames(bob, "alice", CALLING_MEDIA_KIND_AUDIO) >= 25;
    if (!ok) sleep_ms(100);
  }
  pthread_mutex_lock(&print_lock);
  printf("[alice] frames from bob: video=%llu audio=%llu\n",
         (unsigned long long)frames(alice, "bob", CALLING_MEDIA_KIND_VIDEO),
         (unsigned long long)frames(alice, "bob", CALLING_MEDIA_KIND_AUDIO));
  printf("[bob] frames from alice: video=%llu audio=%llu (%llu video bytes, %d keyframes)\n",
         (unsigned long long)frames(bob, "alice", CALLING_MEDIA_KIND_VIDEO),
         (unsigned long long)frames(bob, "alice", CALLING_MEDIA_KIND_AUDIO),
         (unsigned long long)atomic_load(&bob_video_bytes), atomic_load(&bob_keyframes));
  calling_peer_stats st;
  CHECK(calling_client_peer_stats(alice, "bob", &st));
  printf("[alice] stats for bob: connected=%d packets_received=%llu bytes_received=%llu rtt_us=%llu\n",
         st.connected, (unsigned long long)st.packets_received,
         (unsigned long long)st.bytes_received, (unsigned long long)st.rtt_us);
  calling_ice_path path = CALLING_ICE_PATH_NONE;
  CHECK(calling_client_peer_path(alice, "bob", &path));
  static const char *const path_names[] = {"none", "host", "srflx", "prflx", "relay"};
  printf("[alice] path to bob: %s\n", path <= CALLING_ICE_PATH_RELAY ? path_names[path] : "?");
  pthread_mutex_unlock(&print_lock);
  if (!ok || atomic_load(&bob_video_bytes) == 0) {
    fprintf(stderr, "media did not flow\n");
    return 1;
  }

  CHECK(calling_client_hangup(alice));
  if (!bob_wait(bob, CALLING_EVENT_CALL_END, NULL, 0)) return 1;
  for (int i = 0; i < 300 && !atomic_load(&alice_ended); i++) sleep_ms(100);
  if (!atomic_load(&alice_ended)) {
    fprintf(stderr, "alice: no CALL_END\n");
    return 1;
  }

  calling_string_free(call_id);
  CHECK(calling_client_logout(alice));
  CHECK(calling_client_logout(bob));
  calling_client_free(alice);
  calling_client_free(bob);
  printf("done\n");
  return 0;
}
