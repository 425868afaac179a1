/* The C API's contract, checked from C under AddressSanitizer and UBSan:
 * lifecycle, the config builder, NULL arguments, invalid UTF-8, unknown
 * invites, login refusals and the last error, double logout, free(NULL),
 * version macros, and no callback after free.
 * Usage: api_test SERVER_URL SDK_APP_ID SECRET_KEY */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calling.h"

static int failures = 0;

#define EXPECT(cond)                                                        \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
      failures++;                                                           \
    }                                                                       \
  } while (0)

#define EXPECT_RESULT(call, want)                                           \
  do {                                                                      \
    calling_result got_ = (call);                                           \
    if (got_ != (want)) {                                                   \
      fprintf(stderr, "FAIL %s:%d: %s = %u (%s), want %s\n", __FILE__,      \
              __LINE__, #call, (unsigned)got_, calling_result_text(got_),   \
              #want);                                                       \
      failures++;                                                           \
    }                                                                       \
  } while (0)

static const char *url;
static uint64_t app_id;
static const char *key;

/* A pointer value no function may write: out-parameters stay untouched on
 * failure. */
#define SENTINEL ((char *)(uintptr_t)0x5a5a)

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static calling_client *new_client_for(uint64_t app) {
  calling_config *cfg = NULL;
  EXPECT_RESULT(calling_config_new(&cfg), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_server_url(cfg, url), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_sdk_app_id(cfg, app), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_video_source(cfg, CALLING_VIDEO_SOURCE_NONE), CALLING_RESULT_OK);
  /* Media stays on this host: the test's peers all run here. */
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, "127.0.0.1:0"), CALLING_RESULT_OK);
  calling_client *c = NULL;
  EXPECT_RESULT(calling_client_new(cfg, &c), CALLING_RESULT_OK);
  calling_config_free(cfg); /* the client keeps a copy */
  return c;
}

static calling_client *new_client(void) { return new_client_for(app_id); }

/* The client's last error, copied into buf ("" if the call failed). */
static const char *last_error(calling_client *c, char *buf, size_t len) {
  char *text = NULL;
  buf[0] = 0;
  EXPECT_RESULT(calling_client_last_error(c, &text), CALLING_RESULT_OK);
  if (text) {
    snprintf(buf, len, "%s", text);
    calling_string_free(text);
  }
  return buf;
}

#define EXPECT_LAST_ERROR(client, part)                                     \
  do {                                                                      \
    char buf_[512];                                                         \
    const char *got_ = last_error((client), buf_, sizeof buf_);             \
    if (strstr(got_, (part)) == NULL) {                                     \
      fprintf(stderr, "FAIL %s:%d: last error \"%s\" lacks \"%s\"\n",        \
              __FILE__, __LINE__, got_, (part));                            \
      failures++;                                                           \
    }                                                                       \
  } while (0)

static char *sig_for(const char *user) {
  char *sig = NULL;
  EXPECT_RESULT(calling_usersig_generate(app_id, key, user, 3600, &sig),
                CALLING_RESULT_OK);
  return sig;
}

static calling_client *logged_in(const char *user) {
  calling_client *c = new_client();
  char *sig = sig_for(user);
  EXPECT_RESULT(calling_client_login(c, user, sig), CALLING_RESULT_OK);
  calling_string_free(sig);
  return c;
}

/* The header's version macros, checked by the preprocessor and the compiler
 * as well as at run time. */
#if !defined(CALLING_VERSION_MAJOR) || !defined(CALLING_VERSION_MINOR) || \
    !defined(CALLING_VERSION_PATCH) || !defined(CALLING_VERSION_STRING)
#error "calling.h lacks its version macros"
#endif
#if CALLING_VERSION_MAJOR < 0 || CALLING_VERSION_MINOR < 0 || CALLING_VERSION_PATCH < 0
#error "calling.h has a negative version"
#endif
_Static_assert(sizeof(CALLING_VERSION_STRING) > 5, "a version string MAJOR.MINOR.PATCH");

static void test_static(void) {
  EXPECT(strlen(calling_version()) > 0);
  /* The header and the library this program runs with agree. */
  EXPECT(strcmp(calling_version(), CALLING_VERSION_STRING) == 0);
  char dotted[64];
  snprintf(dotted, sizeof dotted, "%d.%d.%d", CALLING_VERSION_MAJOR,
           CALLING_VERSION_MINOR, CALLING_VERSION_PATCH);
  EXPECT(strcmp(dotted, CALLING_VERSION_STRING) == 0);
  EXPECT(CALLING_ERROR_MEDIA_START == 2001);

  /* Every code has its own text; any other uint32_t the same fixed one. */
  const char *unknown = "unknown result code";
  for (uint32_t r = 0; r <= CALLING_RESULT_UNSUPPORTED; r++) {
    const char *t = calling_result_text(r);
    EXPECT(t != NULL && strcmp(t, unknown) != 0);
    for (uint32_t q = 0; q < r; q++) EXPECT(strcmp(t, calling_result_text(q)) != 0);
  }
  EXPECT(strcmp(calling_result_text(CALLING_RESULT_OK), "ok") == 0);
  const uint32_t not_codes[] = {CALLING_RESULT_UNSUPPORTED + 1, 1000, 9999,
                                0x7fffffffu, 0x80000000u, UINT32_MAX - 1, UINT32_MAX};
  for (size_t i = 0; i < sizeof not_codes / sizeof not_codes[0]; i++) {
    const char *t = calling_result_text(not_codes[i]);
    EXPECT(t != NULL && strcmp(t, unknown) == 0);
  }
  for (uint64_t r = CALLING_RESULT_UNSUPPORTED + 1; r <= UINT32_MAX; r += 65521) {
    EXPECT(strcmp(calling_result_text((uint32_t)r), unknown) == 0);
  }
  EXPECT_RESULT(calling_log_init("\xff"), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_log_init("calling=[[nope"), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_log_init("error"), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_log_init(NULL), CALLING_RESULT_OK); /* no effect */
  /* free(NULL) everywhere. */
  calling_client_free(NULL);
  calling_string_free(NULL);
  calling_event_free(NULL);
  printf("static ok\n");
}

static void test_usersig(void) {
  char *sig = SENTINEL;
  EXPECT_RESULT(calling_usersig_generate(app_id, NULL, "alice", 60, &sig),
                CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_usersig_generate(app_id, key, NULL, 60, &sig),
                CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_usersig_generate(app_id, key, "alice", 60, NULL),
                CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_usersig_generate(app_id, "\xff\xfe", "alice", 60, &sig),
                CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_usersig_generate(app_id, key, "alice", 0, &sig),
                CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT(sig == SENTINEL);
  EXPECT_RESULT(calling_usersig_generate(app_id, key, "alice", 60, &sig),
                CALLING_RESULT_OK);
  EXPECT(sig != SENTINEL && sig != NULL);
  EXPECT_RESULT(calling_usersig_verify(app_id, key, "alice", sig), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_usersig_verify(app_id, key, "bob", sig),
                CALLING_RESULT_SIGNATURE_INVALID);
  EXPECT_RESULT(calling_usersig_verify(app_id, "other-key", "alice", sig),
                CALLING_RESULT_SIGNATURE_INVALID);
  EXPECT_RESULT(calling_usersig_verify(app_id, key, "alice", "garbage!"),
                CALLING_RESULT_SIGNATURE_INVALID);
  EXPECT_RESULT(calling_usersig_verify(app_id, key, "alice", "\xc3\x28"),
                CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_usersig_verify(app_id, key, "alice", NULL),
                CALLING_RESULT_NULL_PARAMETER);
  calling_string_free(sig);
  printf("usersig ok\n");
}

static void test_config(void) {
  calling_config *cfg = (calling_config *)SENTINEL;
  calling_client *c = (calling_client *)SENTINEL;
  EXPECT_RESULT(calling_config_new(NULL), CALLING_RESULT_NULL_PARAMETER);
  /* Every setter with a NULL config. */
  EXPECT_RESULT(calling_config_set_server_url(NULL, url), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_sdk_app_id(NULL, app_id), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_video_source(NULL, CALLING_VIDEO_SOURCE_NONE), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_video_quality(NULL, CALLING_VIDEO_QUALITY_720P), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_tone_frequency(NULL, 440.0f), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_audio_file(NULL, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_event_capacity(NULL, 64), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_udp_addrs(NULL, "127.0.0.1:0"), CALLING_RESULT_NULL_PARAMETER);
  calling_config_free(NULL);
  EXPECT_RESULT(calling_client_new(NULL, &c), CALLING_RESULT_NULL_PARAMETER);

  EXPECT_RESULT(calling_config_new(&cfg), CALLING_RESULT_OK);
  EXPECT(cfg != NULL && cfg != (calling_config *)SENTINEL);
  /* No server URL yet. */
  EXPECT_RESULT(calling_client_new(cfg, &c), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_server_url(cfg, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_config_set_server_url(cfg, "\xff"), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_config_set_server_url(cfg, "http://127.0.0.1:1/"), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_server_url(cfg, "ws://"), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_server_url(cfg, "ws://a b/ws"), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_client_new(cfg, &c), CALLING_RESULT_INVALID_ARGUMENT); /* still none */
  EXPECT_RESULT(calling_config_set_sdk_app_id(cfg, 0), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_sdk_app_id(cfg, UINT64_MAX), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_video_source(cfg, 42), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_video_source(cfg, UINT32_MAX), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_video_source(cfg, CALLING_VIDEO_SOURCE_TEST_PATTERN), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_video_quality(cfg, 3), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_video_quality(cfg, CALLING_VIDEO_QUALITY_1080P), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_tone_frequency(cfg, 0.0f), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_tone_frequency(cfg, -440.0f), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_tone_frequency(cfg, 24001.0f), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_tone_frequency(cfg, NAN), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_tone_frequency(cfg, INFINITY), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_tone_frequency(cfg, 880.0f), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_audio_file(cfg, "\xfe.ogg"), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_config_set_audio_file(cfg, ""), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_audio_file(cfg, "mic.ogg"), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_audio_file(cfg, NULL), CALLING_RESULT_OK); /* the tone again */
  EXPECT_RESULT(calling_config_set_event_capacity(cfg, 0), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_event_capacity(cfg, 15), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_event_capacity(cfg, (1u << 20) + 1), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_event_capacity(cfg, 16), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, ""), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, "127.0.0.1"), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, "127.0.0.1:0,nope"), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, "\xff"), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, "0.0.0.0:0, [::]:0,127.0.0.1:0"), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_udp_addrs(cfg, NULL), CALLING_RESULT_OK);
  EXPECT(c == (calling_client *)SENTINEL);

  /* The client copies the config: changing or freeing it afterwards does
   * not reach the client. */
  char server[256];
  snprintf(server, sizeof server, "%s", url);
  EXPECT_RESULT(calling_config_set_server_url(cfg, server), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_config_set_sdk_app_id(cfg, app_id), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_client_new(cfg, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_new(cfg, &c), CALLING_RESULT_OK);
  EXPECT(c != NULL && c != (calling_client *)SENTINEL);
  memset(server, 'x', sizeof server - 1);
  EXPECT_RESULT(calling_config_set_server_url(cfg, "ws://127.0.0.1:1/elsewhere"), CALLING_RESULT_OK);
  calling_config_free(cfg);
  char *sig = sig_for("grace");
  EXPECT_RESULT(calling_client_login(c, "grace", sig), CALLING_RESULT_OK);
  calling_string_free(sig);
  calling_client_free(c);
  printf("config ok\n");
}

static void test_null_arguments(void) {
  calling_client *c = (calling_client *)SENTINEL;
  /* Every client function with a NULL client. */
  char *s = SENTINEL;
  calling_event *ev = NULL;
  uint64_t n = 0;
  const char *users[] = {"bob"};
  EXPECT_RESULT(calling_client_set_event_callback(NULL, NULL, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_set_frame_callback(NULL, NULL, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_poll_event(NULL, &ev), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_wait_event(NULL, 0, &ev), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_frames_received(NULL, "bob", CALLING_MEDIA_KIND_AUDIO, &n), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_login(NULL, "a", "b"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_logout(NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_call(NULL, "bob", CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_group_call(NULL, users, 1, CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_call_with(NULL, users, 1, CALLING_MEDIA_TYPE_AUDIO, 30, NULL, NULL, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_accept(NULL, "x"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_reject(NULL, "x"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_ignore(NULL, "x"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_hangup(NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_invite(NULL, users, 1, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_join(NULL, "x", "alice:s"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_switch_media_type(NULL, CALLING_MEDIA_TYPE_VIDEO), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_answer_media_switch(NULL, 1, true), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_set_mic_mute(NULL, true), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_set_hands_free(NULL, true), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_open_camera(NULL, CALLING_VIDEO_SOURCE_TEST_PATTERN), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_open_camera_file(NULL, "x.h264", 30, true), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_close_camera(NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_set_video_quality(NULL, CALLING_VIDEO_QUALITY_720P), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_current_call(NULL, &s), CALLING_RESULT_NULL_PARAMETER);
  calling_peer_stats st;
  EXPECT_RESULT(calling_client_peer_stats(NULL, "bob", &st), CALLING_RESULT_NULL_PARAMETER);
  calling_ice_path pth;
  EXPECT_RESULT(calling_client_peer_path(NULL, "bob", &pth), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_last_error(NULL, &s), CALLING_RESULT_NULL_PARAMETER);

  /* A live client with NULL strings, arrays and out-parameters. */
  c = new_client();
  EXPECT_RESULT(calling_client_poll_event(c, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_wait_event(c, 0, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_frames_received(c, NULL, CALLING_MEDIA_KIND_AUDIO, &n), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_frames_received(c, "bob", CALLING_MEDIA_KIND_AUDIO, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_login(c, NULL, "sig"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_login(c, "alice", NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_call(c, NULL, CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_call(c, "bob", CALLING_MEDIA_TYPE_AUDIO, 30, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_group_call(c, NULL, 2, CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  const char *with_null[] = {"bob", NULL};
  EXPECT_RESULT(calling_client_group_call(c, with_null, 2, CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_group_call(c, users, 1, CALLING_MEDIA_TYPE_AUDIO, 30, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_call_with(c, users, 1, CALLING_MEDIA_TYPE_AUDIO, 30, NULL, NULL, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_accept(c, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_reject(c, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_ignore(c, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_invite(c, NULL, 1, 30, &s), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_invite(c, users, 1, 30, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_join(c, NULL, "alice:s"), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_join(c, "call", NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_open_camera_file(c, NULL, 30, true), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_current_call(c, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_peer_stats(c, NULL, &st), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_peer_stats(c, "bob", NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_peer_path(c, "bob", NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT_RESULT(calling_client_last_error(c, NULL), CALLING_RESULT_NULL_PARAMETER);
  EXPECT(s == SENTINEL);
  /* The argument that was NULL is named. */
  EXPECT_LAST_ERROR(c, "calling_client_peer_path: `out`");
  calling_client_free(c);
  printf("null arguments ok\n");
}

static void test_invalid_input(calling_client *c) {
  char *s = SENTINEL;
  const char *bad_users[] = {"bob", "\xe2\x82"};
  EXPECT_RESULT(calling_client_call(c, "b\xffob", CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_client_group_call(c, bad_users, 2, CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_client_call_with(c, bad_users, 1, CALLING_MEDIA_TYPE_AUDIO, 30, "\xff", NULL, &s), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_client_accept(c, "\xc0\xaf"), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_client_join(c, "\xff", "alice:s"), CALLING_RESULT_INVALID_UTF8);
  EXPECT_RESULT(calling_client_call(c, "bob", 7, 30, &s), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_client_call(c, "bad id!", CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_client_group_call(c, NULL, 0, CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_client_set_video_quality(c, 99), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_client_open_camera(c, CALLING_VIDEO_SOURCE_NONE), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT_RESULT(calling_client_switch_media_type(c, 0), CALLING_RESULT_INVALID_ARGUMENT);
  uint64_t n = 77;
  EXPECT_RESULT(calling_client_frames_received(c, "bob", 9, &n), CALLING_RESULT_INVALID_ARGUMENT);
  EXPECT(n == 77);
  EXPECT(s == SENTINEL);
  printf("invalid input ok\n");
}

static void test_lifecycle(void) {
  calling_client *c = new_client();
  char *s = SENTINEL;
  calling_event *ev = (calling_event *)SENTINEL;
  char text[512];
  /* Nothing failed yet. */
  EXPECT(strcmp(last_error(c, text, sizeof text), "") == 0);
  /* Before login. */
  EXPECT_RESULT(calling_client_hangup(c), CALLING_RESULT_NOT_LOGGED_IN);
  EXPECT_LAST_ERROR(c, "calling_client_hangup: not logged in");
  EXPECT_RESULT(calling_client_logout(c), CALLING_RESULT_NOT_LOGGED_IN);
  EXPECT_LAST_ERROR(c, "calling_client_logout: not logged in");
  EXPECT_RESULT(calling_client_call(c, "bob", CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_NOT_LOGGED_IN);
  EXPECT_RESULT(calling_client_poll_event(c, &ev), CALLING_RESULT_NO_EVENT);
  EXPECT(ev == (calling_event *)SENTINEL);
  /* An empty queue is an answer, not a failure: the last error stays. */
  EXPECT_LAST_ERROR(c, "calling_client_call: not logged in");
  /* A forged UserSig is refused by the server, and says why. */
  EXPECT_RESULT(calling_client_login(c, "alice", "not-a-usersig"), CALLING_RESULT_LOGIN_BAD_SIGNATURE);
  EXPECT_LAST_ERROR(c, "calling_client_login: ");
  EXPECT_LAST_ERROR(c, "login refused: bad_signature");
  char *bob_sig = sig_for("bob");
  EXPECT_RESULT(calling_client_login(c, "alice", bob_sig), CALLING_RESULT_LOGIN_BAD_SIGNATURE);
  EXPECT_LAST_ERROR(c, "bad_signature");
  calling_string_free(bob_sig);
  /* A server for another app. */
  calling_client *other_app = new_client_for(app_id + 1);
  char *alice_sig = sig_for("alice");
  EXPECT_RESULT(calling_client_login(other_app, "alice", alice_sig), CALLING_RESULT_LOGIN_WRONG_APP);
  EXPECT_LAST_ERROR(other_app, "login refused: wrong_app");
  calling_string_free(alice_sig);
  /* The copy outlives the client. */
  char *copy = NULL;
  EXPECT_RESULT(calling_client_last_error(other_app, &copy), CALLING_RESULT_OK);
  calling_client_free(other_app);
  EXPECT(copy != NULL && strstr(copy, "wrong_app") != NULL);
  calling_string_free(copy);

  char *sig = sig_for("alice");
  EXPECT_RESULT(calling_client_login(c, "alice", sig), CALLING_RESULT_OK);
  /* A success does not clear the last error. */
  EXPECT_LAST_ERROR(c, "bad_signature");
  EXPECT_RESULT(calling_client_login(c, "alice", sig), CALLING_RESULT_ALREADY_LOGGED_IN);
  EXPECT_LAST_ERROR(c, "calling_client_login: already logged in");
  test_invalid_input(c);
  EXPECT_LAST_ERROR(c, "calling_client_frames_received: `kind`: 9");
  /* Unknown invites. */
  EXPECT_RESULT(calling_client_accept(c, "no-such-invite"), CALLING_RESULT_NO_SUCH_INVITE);
  EXPECT_RESULT(calling_client_reject(c, "no-such-invite"), CALLING_RESULT_NO_SUCH_INVITE);
  EXPECT_RESULT(calling_client_ignore(c, "no-such-invite"), CALLING_RESULT_NO_SUCH_INVITE);
  EXPECT_RESULT(calling_client_accept(c, "not an id"), CALLING_RESULT_NO_SUCH_INVITE);
  EXPECT_LAST_ERROR(c, "calling_client_accept: `invite_id`");
  /* No call yet. */
  EXPECT_RESULT(calling_client_hangup(c), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_client_current_call(c, &s), CALLING_RESULT_NOT_IN_CALL);
  EXPECT(s == SENTINEL);
  calling_peer_stats st = {.packets_sent = 99};
  EXPECT_RESULT(calling_client_peer_stats(c, "bob", &st), CALLING_RESULT_NOT_IN_CALL);
  EXPECT(st.packets_sent == 99);
  EXPECT_RESULT(calling_client_call(c, "alice", CALLING_MEDIA_TYPE_AUDIO, 30, &s), CALLING_RESULT_CALL_REFUSED);
  EXPECT_RESULT(calling_client_switch_media_type(c, CALLING_MEDIA_TYPE_VIDEO), CALLING_RESULT_NOT_IN_CALL);
  EXPECT_RESULT(calling_client_set_mic_mute(c, true), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_client_set_hands_free(c, false), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_client_set_video_quality(c, CALLING_VIDEO_QUALITY_720P), CALLING_RESULT_OK);
  /* Double logout, then log in again on the same handle. */
  EXPECT_RESULT(calling_client_logout(c), CALLING_RESULT_OK);
  EXPECT_RESULT(calling_client_logout(c), CALLING_RESULT_NOT_LOGGED_IN);
  EXPECT_RESULT(calling_client_hangup(c), CALLING_RESULT_NOT_LOGGED_IN);
  EXPECT_RESULT(calling_client_login(c, "alice", sig), CALLING_RESULT_OK);
  calling_string_free(sig);
  calling_client_free(c); /* while logged in */
  printf("lifecycle ok\n");
}

/* Callback state of the after-free test. */
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static char invite_id[128];
static atomic_int entered;
static atomic_int volumes;
static atomic_int freed;
static atomic_int after_free;
static atomic_uint inner_result = 9999;
static atomic_uint inner_wait = 9999;
static atomic_int inner_error_ok;
/* Set last by the INVITED callback, once all of the above are stored. */
static atomic_int invited_done;

static void on_event(void *user_data, const calling_event *event) {
  calling_client *self = user_data;
  if (atomic_load(&freed)) {
    atomic_fetch_add(&after_free, 1);
  }
  switch (event->kind) {
  case CALLING_EVENT_INVITED:
    pthread_mutex_lock(&cb_lock);
    snprintf(invite_id, sizeof invite_id, "%s", event->invite_id);
    pthread_mutex_unlock(&cb_lock);
    /* Blocking calls are refused on a runtime thread, not deadlocked. */
    atomic_store(&inner_result, calling_client_hangup(self));
    calling_event *ev = NULL;
    atomic_store(&inner_wait, calling_client_wait_event(self, 10, &ev));
    /* The last error is readable here, and says what was refused. */
    char *text = NULL;
    if (calling_client_last_error(self, &text) == CALLING_RESULT_OK) {
      atomic_store(&inner_error_ok,
                   strstr(text, "calling_client_wait_event: called from a runtime thread") != NULL);
      calling_string_free(text);
    }
    atomic_store(&invited_done, 1);
    break;
  case CALLING_EVENT_USER_ENTER:
    atomic_store(&entered, 1);
    break;
  case CALLING_EVENT_USER_VOICE_VOLUME:
    atomic_fetch_add(&volumes, 1);
    break;
  default:
    break;
  }
}

/* Waits up to 20 s for *flag to reach min. */
static int wait_for(atomic_int *flag, int min) {
  for (int i = 0; i < 2000; i++) {
    if (atomic_load(flag) >= min) return 1;
    sleep_ms(10);
  }
  return 0;
}

/* Waits up to 20 s for an event of `kind` on a polled client. */
static int wait_event_kind(calling_client *c, calling_event_kind kind) {
  for (int i = 0; i < 200; i++) {
    calling_event *ev = NULL;
    if (calling_client_wait_event(c, 100, &ev) != CALLING_RESULT_OK) continue;
    int hit = ev->kind == kind;
    calling_event_free(ev);
    if (hit) return 1;
  }
  return 0;
}

static void test_no_events_after_free(void) {
  calling_client *alice = logged_in("carol");
  calling_client *bob = logged_in("dave");
  EXPECT_RESULT(calling_client_set_event_callback(alice, on_event, alice), CALLING_RESULT_OK);
  char *call_id = NULL;
  EXPECT_RESULT(calling_client_call(bob, "carol", CALLING_MEDIA_TYPE_AUDIO, 30, &call_id), CALLING_RESULT_OK);
  char id[128] = {0};
  for (int i = 0; i < 2000 && id[0] == 0; i++) {
    pthread_mutex_lock(&cb_lock);
    memcpy(id, invite_id, sizeof id);
    pthread_mutex_unlock(&cb_lock);
    if (id[0] == 0) sleep_ms(10);
  }
  EXPECT(id[0] != 0);
  /* The invite id is stored first; the refused calls' results after it. */
  EXPECT(wait_for(&invited_done, 1));
  EXPECT(atomic_load(&inner_result) == CALLING_RESULT_WRONG_THREAD);
  EXPECT(atomic_load(&inner_wait) == CALLING_RESULT_WRONG_THREAD);
  EXPECT(atomic_load(&inner_error_ok));
  EXPECT_RESULT(calling_client_accept(alice, id), CALLING_RESULT_OK);
  EXPECT(wait_for(&entered, 1));
  EXPECT(wait_event_kind(bob, CALLING_EVENT_USER_ENTER));
  char *current = NULL;
  EXPECT_RESULT(calling_client_current_call(bob, &current), CALLING_RESULT_OK);
  EXPECT(current != NULL && strcmp(current, call_id) == 0);
  calling_string_free(current);
  /* Voice volumes stream to the callback while the client is freed. */
  EXPECT(wait_for(&volumes, 2));
  calling_peer_stats st = {0};
  EXPECT_RESULT(calling_client_peer_stats(bob, "carol", &st), CALLING_RESULT_OK);
  EXPECT(st.connected);
  EXPECT(st.packets_received > 0 && st.bytes_received > 0);
  EXPECT(st.video_frames_received == 0); /* an audio call */
  /* Media flows, so ICE selected a pair: on loopback, host to host (or to
   * the address carol's checks came from, when they beat her candidate). */
  calling_ice_path path = CALLING_ICE_PATH_RELAY;
  EXPECT_RESULT(calling_client_peer_path(bob, "carol", &path), CALLING_RESULT_OK);
  EXPECT(path == CALLING_ICE_PATH_HOST || path == CALLING_ICE_PATH_PEER_REFLEXIVE);
  EXPECT_RESULT(calling_client_peer_path(bob, "nobody", &path), CALLING_RESULT_NOT_IN_CALL);
  calling_client_free(alice);
  atomic_store(&freed, 1);
  /* Bob sees carol leave; carol's callback must stay silent throughout. */
  EXPECT(wait_event_kind(bob, CALLING_EVENT_CALL_END));
  EXPECT(atomic_load(&after_free) == 0);
  calling_string_free(call_id);
  calling_client_free(bob);
  printf("no events after free ok\n");
}

/* Logging in as the same user elsewhere kicks the first client out; it can
 * log in again on the same handle once its session has stopped. */
static void test_kicked_out(void) {
  calling_client *first = logged_in("erin");
  calling_client *second = logged_in("erin");
  EXPECT(wait_event_kind(first, CALLING_EVENT_KICKED_OUT));
  EXPECT_RESULT(calling_client_hangup(first), CALLING_RESULT_NOT_LOGGED_IN);
  char *sig = sig_for("erin");
  /* Logging in again right after KICKED_OUT works: no retry needed. */
  EXPECT_RESULT(calling_client_login(first, "erin", sig), CALLING_RESULT_OK);
  EXPECT(wait_event_kind(second, CALLING_EVENT_KICKED_OUT));
  calling_string_free(sig);
  calling_client_free(first);
  calling_client_free(second);
  printf("kicked out ok\n");
}

/* A UserSig valid for 1 s, made when the program starts and used once it
 * has expired: the server refuses it as expired. */
static char *short_sig;
static time_t short_sig_made;

static void test_expired_login(void) {
  /* The sig expires when the clock passes issue time + 1 s; the issue time
   * may be one second after short_sig_made. */
  while (time(NULL) < short_sig_made + 3) sleep_ms(100);
  calling_client *c = new_client();
  EXPECT_RESULT(calling_client_login(c, "heidi", short_sig), CALLING_RESULT_LOGIN_SIG_EXPIRED);
  EXPECT_LAST_ERROR(c, "calling_client_login: ");
  EXPECT_LAST_ERROR(c, "login refused: sig_expired");
  calling_string_free(short_sig);
  calling_client_free(c);
  printf("expired login ok\n");
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SERVER_URL SDK_APP_ID SECRET_KEY\n", argv[0]);
    return 2;
  }
  url = argv[1];
  app_id = strtoull(argv[2], NULL, 10);
  key = argv[3];
  short_sig_made = time(NULL);
  EXPECT_RESULT(calling_usersig_generate(app_id, key, "heidi", 1, &short_sig), CALLING_RESULT_OK);
  test_static();
  test_usersig();
  test_config();
  test_null_arguments();
  test_lifecycle();
  test_no_events_after_free();
  test_kicked_out();
  test_expired_login();
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("all ok\n");
  return 0;
}
