/* chatfile: a conversation on disk as OpenAI-style JSON, {"messages": [{"role": "system" |
 * "user" | "assistant", "content": TEXT}, ...]} — what `tern chat` writes with /save and reads
 * with /load and --chat-file; an assistant message may carry its thinking as "reasoning_content"
 * (llama-server's field) beside its answer. A file to read is untrusted: bounded in bytes and messages, every
 * field checked, one-line errors naming the message. Not here: formatting a conversation with
 * the chat template (chat.c), tool calls and other roles (the server's requests carry those). */
#ifndef TERN_CHATFILE_H
#define TERN_CHATFILE_H
#include <stddef.h>
#include "coordinator/tokenizer.h"

#define CHATFILE_MAX_BYTES (16L << 20)   /* a file to read: far beyond any context's worth of text */
#define CHATFILE_MAX_MSGS 100000

/* Parses text[0..len) into *msgs (n: *n_msgs, possibly 0; roles are the literals "system",
 * "user", "assistant"; each content malloc'd; free with chatfile_msgs_free). A message's content
 * is a string or OpenAI's array of {"type": "text", "text": ...} parts (joined); a "system"
 * message only comes first. 0, or TERN_EFORMAT / TERN_ENOMEM with a one-line err (*msgs NULL). */
int chatfile_parse(const char *text, size_t len, chat_msg_t **msgs, int *n_msgs, char *err, size_t errlen);
/* The conversation as the JSON text chatfile_parse reads (malloc'd, ends with a newline), or NULL
 * when out of memory. JSON holds Unicode text only: bytes that are not UTF-8 (a typed line may
 * hold any, a reply cut inside a character too) become U+FFFD, counted in *n_bad. */
char *chatfile_dump(const chat_msg_t *msgs, int n_msgs, int *n_bad);
/* chatfile_dump into path, through path.tmp renamed into place (a failure leaves the old file).
 * 0 or TERN_EIO / TERN_ENOMEM with a one-line err naming the file. */
int chatfile_save(const char *path, const chat_msg_t *msgs, int n_msgs, int *n_bad, char *err, size_t errlen);
/* OpenAI's text content parts ([{"type": "text", "text": ...}, ...], c: a json_t * array) joined
 * into *out (malloc'd, NUL-terminated, *len bytes before the NUL; the server's requests read
 * content so too). 0, TERN_EFORMAT (c is not such an array) or TERN_ENOMEM. */
int chatfile_join_parts(const void *c, char **out, size_t *len);
/* Frees the contents (not the roles: literals) and the array. */
void chatfile_msgs_free(chat_msg_t *msgs, int n_msgs);

/* The same with each message's thinking: think[i] an assistant message's "reasoning_content"
 * (malloc'd) or NULL. chatfile_parse_ex fills *think (n entries, at least one allocated; think
 * NULL: the field is checked and dropped) — "reasoning_content" is a string or null, and only on
 * an assistant message; chatfile_dump_ex / chatfile_save_ex write it where think[i] is set (think
 * NULL: none). chatfile_think_free frees the n strings and the array. */
int chatfile_parse_ex(const char *text, size_t len, chat_msg_t **msgs, char ***think, int *n_msgs, char *err,
                      size_t errlen);
char *chatfile_dump_ex(const chat_msg_t *msgs, char *const *think, int n_msgs, int *n_bad);
int chatfile_save_ex(const char *path, const chat_msg_t *msgs, char *const *think, int n_msgs, int *n_bad, char *err,
                     size_t errlen);
void chatfile_think_free(char **think, int n);

#endif
