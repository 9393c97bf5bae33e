/* balabit.h - reader of the Balabit Mouse Dynamics Challenge CSV format
 * (Fülöp et al. 2016): one remote-desktop session's mouse events, one per
 * row, under the header
 *     record timestamp,client timestamp,button,state,x,y
 * Used by the replay source of ip-collect and by the trainer.
 *
 * Two layers:
 *  - ipk_balabit_parse_row() parses one row (no allocation, no state);
 *  - a streaming reader that returns the rows of a file as a clean event
 *    stream, repairing the defects of the real data and counting them:
 *      unparseable row         skipped (the first one's line is kept)
 *      repeated row            a row identical to the previous row: dropped
 *      non-monotone timestamp  below the previous event's: clamped to it
 *      absurd jump             a forward gap larger than max_jump: the rest
 *                              of the trace is shifted back so the gap is
 *                              max_jump; a backward step larger than
 *                              max_jump shifts the rest forward so that it
 *                              continues at the previous timestamp
 *    Blank lines and a CR before the newline are ignored; a last line
 *    without a newline is a row like the others.
 *
 * Ownership: a reader owns its buffer and (unless told otherwise) its file
 * descriptor; ipk_balabit_close() frees both and accepts NULL. Events are
 * plain values copied out to the caller.
 */
#ifndef IPK_BALABIT_H
#define IPK_BALABIT_H

#include <stddef.h>

#include "ipk.h"

#define IPK_BALABIT_HEADER "record timestamp,client timestamp,button,state,x,y"

/* The position the data set writes when the pointer is outside the client
 * area (both coordinates). Such rows, and Scroll rows (always written at
 * 0,0), carry no pointer position. */
#define IPK_BALABIT_OFFSCREEN 65535.0

enum ipk_balabit_button {
	IPK_BB_NOBUTTON, IPK_BB_LEFT, IPK_BB_RIGHT, IPK_BB_SCROLL,
	IPK_BB_OTHER_BUTTON, /* any other non-empty name (the data has XButton) */
};

enum ipk_balabit_state {
	IPK_BB_MOVE, IPK_BB_PRESSED, IPK_BB_RELEASED, IPK_BB_DRAG, IPK_BB_DOWN, IPK_BB_UP,
	IPK_BB_OTHER_STATE, /* any other non-empty name */
};

struct ipk_balabit_row {
	double record_ts; /* seconds, as written (coarse) */
	double client_ts; /* seconds since the session's start, as written */
	double x, y;      /* pixels */
	enum ipk_balabit_button button;
	enum ipk_balabit_state state;
};

/* One event of the cleaned stream. */
struct ipk_balabit_event {
	struct ipk_balabit_row row;
	double t;    /* client_ts after defect repair: never below the previous event's t */
	long lineno; /* 1-based line of the row in the file (the header is line 1) */
};

/* True when the row carries a pointer position (see IPK_BALABIT_OFFSCREEN). */
int ipk_balabit_has_position(const struct ipk_balabit_row *r);

/* Parse a decimal number (optional sign, digits, optional fraction and
 * exponent; no spaces, no hex, no inf/nan) occupying exactly s[0..n).
 * Correctly rounded, like strtod. Returns 0, or -1 when s is not one. */
int ipk_balabit_parse_number(const char *s, size_t n, double *out);

/* Parse one data row (without its line ending): six comma-separated fields,
 * the timestamps and coordinates numbers, button and state non-empty.
 * Returns 0, or -1 when the row is not valid (row is then undefined). */
int ipk_balabit_parse_row(const char *line, size_t len, struct ipk_balabit_row *row);

/* True when line (without line ending; a CR and a UTF-8 byte-order mark are
 * tolerated) is the Balabit header. */
int ipk_balabit_is_header(const char *line, size_t len);

/* Defect counts of one file so far. */
struct ipk_balabit_stats {
	long lines;          /* lines read, header included */
	long events;         /* events returned */
	long repeated;       /* rows dropped as repeats of the previous row */
	long nonmonotone;    /* timestamps clamped to the previous one */
	long jumps;          /* absurd jumps shortened */
	long unparseable;    /* rows skipped */
	long first_bad_line; /* line of the first unparseable row, 0 when none */
	double removed_s;    /* seconds removed by shortening forward jumps */
};

struct ipk_balabit_reader;

/* Open PATH (NAME is used in messages; NULL: PATH) and check its header.
 * max_jump <= 0 means 3600 s. Returns a reader, or NULL with err set:
 * IPK_EXIT_NOINPUT when the file cannot be opened or is a directory,
 * IPK_EXIT_DATAERR when it is empty or does not start with the header. */
struct ipk_balabit_reader *ipk_balabit_open(const char *path, const char *name, double max_jump, struct ipk_err *err);

/* A reader over an open descriptor whose first npre bytes were already read
 * into pre (copied; may be 0/NULL). own_fd: close fd at ipk_balabit_close().
 * Checks the header like ipk_balabit_open(); on failure fd is closed when
 * owned. */
struct ipk_balabit_reader *ipk_balabit_from_fd(int fd, int own_fd, const char *name, const char *pre, size_t npre,
					       double max_jump, struct ipk_err *err);

/* Next event of the cleaned stream. Returns 1 with *ev filled, 0 at the end
 * of the file, -1 with err set (IPK_EXIT_IOERR) when reading fails, or
 * (strict reader) IPK_EXIT_DATAERR at an unparseable row, naming its line. */
int ipk_balabit_next(struct ipk_balabit_reader *r, struct ipk_balabit_event *ev, struct ipk_err *err);

/* strict: an unparseable row ends the stream with an error instead of being
 * skipped (--strict). The other defects are repaired either way: they are
 * what real traces contain, not bad input. */
void ipk_balabit_set_strict(struct ipk_balabit_reader *r, int strict);

/* The counts so far; valid until ipk_balabit_close(). */
const struct ipk_balabit_stats *ipk_balabit_stats(const struct ipk_balabit_reader *r);

/* Describe the defects in st as "dropped 3 repeated rows, clamped 12
 * non-monotone timestamps, capped 1 absurd jump, skipped 2 unparseable rows
 * (first at line 17)" into buf (always NUL-terminated; "" when none).
 * Returns the number of defects (0 when the file was clean). */
long ipk_balabit_describe(const struct ipk_balabit_stats *st, char *buf, size_t n);

void ipk_balabit_close(struct ipk_balabit_reader *r);

#endif
