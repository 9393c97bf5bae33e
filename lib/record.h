/* record.h - the JSON-lines record stream (see ipkit-records(7)).
 *
 * Every record is one JSON object on one line with "type" (string), "v"
 * (schema version, integer) and "ts" (seconds since the Unix epoch). Known
 * types have further required fields, checked by the reader; unknown fields
 * and unknown types are accepted (readers ignore what they do not know and
 * programs pass it through unchanged).
 *
 * Ownership: a reader owns the line buffer and the parsed cJSON of the record
 * it last returned; both stay valid until the next ipk_reader_next() or
 * ipk_reader_close(). To keep the JSON, take it with ipk_record_take_json()
 * and cJSON_Delete() it yourself. A writer borrows its FILE.
 */
#ifndef IPK_RECORD_H
#define IPK_RECORD_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "ipk.h"

#define IPK_RECORD_V 1

struct ipk_record {
	cJSON *json;          /* the object; owned by the reader */
	const char *type;     /* points into json */
	const char *session;  /* points into json, NULL when absent */
	double ts;
	int v;
	const char *line;     /* the raw line, without its line ending */
	size_t len;
	long lineno;          /* 1-based line number in the input */
};

struct ipk_reader;

enum ipk_read_result {
	IPK_READ_EOF = 0,     /* end of input */
	IPK_READ_RECORD = 1,  /* *rec is filled */
	IPK_READ_BAD = 2,     /* a bad line was skipped; err names input and line */
	IPK_READ_ERROR = -1,  /* the input itself failed (I/O error); err is set */
};

/* Open PATH for reading records ("-" is standard input). Returns NULL with
 * err set (IPK_EXIT_NOINPUT) when it cannot be opened. */
struct ipk_reader *ipk_reader_open(const char *path, struct ipk_err *err);

/* Read records from an open FILE named NAME in messages; the reader does not
 * close f. Returns NULL only when out of memory. */
struct ipk_reader *ipk_reader_from(FILE *f, const char *name);

/* Next record. Blank lines are skipped silently. A line that is not valid
 * JSON, not an object, or lacks a required field gives IPK_READ_BAD with a
 * message "input 'NAME' line N: ..." in err (code IPK_EXIT_DATAERR); the
 * caller reports it and goes on (or stops under --strict). */
enum ipk_read_result ipk_reader_next(struct ipk_reader *r, struct ipk_record *rec, struct ipk_err *err);

/* Take ownership of the record's JSON; the reader will not free it. */
cJSON *ipk_record_take_json(struct ipk_reader *r, struct ipk_record *rec);

/* The input's name as given at open time. */
const char *ipk_reader_name(const struct ipk_reader *r);

/* The underlying file descriptor, for poll(). */
int ipk_reader_fd(const struct ipk_reader *r);

/* Count of bad lines seen so far. */
long ipk_reader_bad(const struct ipk_reader *r);

/* Close (and fclose the file if ipk_reader_open opened it). NULL is fine. */
void ipk_reader_close(struct ipk_reader *r);

/* Check that obj is a valid record: an object with type/v/ts and the
 * required fields of its type. Returns 0, or -1 with err describing the
 * first problem (without input/line: the caller adds them). */
int ipk_record_validate(const cJSON *obj, struct ipk_err *err);

/* A new record object with type, v and ts set. NULL when out of memory. */
cJSON *ipk_record_new(const char *type, double ts);

struct ipk_writer {
	FILE *f;
	int flush_each; /* flush after every record: on when f is not a terminal */
	int closed;     /* set when a write met EPIPE */
};

/* Prepare a writer on f (usually stdout). */
void ipk_writer_init(struct ipk_writer *w, FILE *f);

/* Write obj as one compact line. Returns 0, or -1 with err set
 * (IPK_EXIT_IOERR); after a closed pipe downstream ipk_writer_closed() is
 * true. SIGPIPE must be ignored for that (programs do it in main). */
int ipk_write(struct ipk_writer *w, const cJSON *obj, struct ipk_err *err);

/* Write a line unchanged (pass-through); len excludes the newline. */
int ipk_write_raw(struct ipk_writer *w, const char *line, size_t len, struct ipk_err *err);

/* Flush now. Returns 0 or -1 with err. */
int ipk_writer_flush(struct ipk_writer *w, struct ipk_err *err);

/* Flush and check for errors (call at exit). Returns 0 or -1 with err. */
int ipk_writer_finish(struct ipk_writer *w, struct ipk_err *err);

/* True when the last failure was a closed downstream pipe: programs exit
 * quietly then. */
int ipk_writer_closed(const struct ipk_writer *w);

/* Fast JSON text for the hot output paths (samples, predictions), without
 * building a cJSON tree. Both write into buf (at least 32 bytes for a number,
 * 6 * strlen(s) + 3 for a string) and return the length written.
 * Numbers: integers below 2^53 exactly; others with at most 6 decimals
 * (trailing zeros dropped) below 1e12, else 17 significant digits;
 * non-finite values as null. Strings are quoted and escaped. */
size_t ipk_json_number(char *buf, double v);
size_t ipk_json_string(char *buf, const char *s);

/* Convenience getters: return the field's value or def when absent or of
 * another JSON type. */
double ipk_json_num(const cJSON *obj, const char *name, double def);
const char *ipk_json_str(const cJSON *obj, const char *name, const char *def);

#endif
