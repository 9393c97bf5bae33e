/* SHA-256 against FIPS 180-4 examples, HMAC-SHA256 against RFC 4231. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sha256.h"

static const char *hex(const uint8_t d[32])
{
	static char s[65];
	return ipk_hex(d, 32, s);
}

static int unhex(const char *s, uint8_t *out)
{
	size_t n = strlen(s) / 2;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return (int)n;
}

int main(void)
{
	uint8_t d[32];
	ipk_sha256("abc", 3, d);
	CHECK("sha256 'abc' (FIPS 180-4)",
	      !strcmp(hex(d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	ipk_sha256("", 0, d);
	CHECK("sha256 empty", !strcmp(hex(d), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	ipk_sha256(m2, strlen(m2), d);
	CHECK("sha256 448-bit message (FIPS 180-4)",
	      !strcmp(hex(d), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
	/* one million 'a', fed in uneven pieces to exercise the buffering */
	struct ipk_sha256 c;
	ipk_sha256_init(&c);
	char *a = malloc(1000000);
	memset(a, 'a', 1000000);
	size_t off = 0, step = 1;
	while (off < 1000000) {
		size_t n = step < 1000000 - off ? step : 1000000 - off;
		ipk_sha256_update(&c, a + off, n);
		off += n;
		step = step * 3 % 1031 + 1;
	}
	ipk_sha256_final(&c, d);
	free(a);
	CHECK("sha256 million 'a' in pieces",
	      !strcmp(hex(d), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));

	/* RFC 4231 test cases 1, 2, 3, 4, 6, 7 */
	struct {
		const char *key, *data, *mac;
	} tc[] = {
		{ "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
		  "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
		{ "4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
		  "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
		  "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
		{ "0102030405060708090a0b0c0d0e0f10111213141516171819",
		  "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
		  "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
		  "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
		  "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
	};
	const char *names[] = { "1", "2", "3", "4", "6", "7" };
	for (size_t i = 0; i < sizeof(tc) / sizeof(tc[0]); i++) {
		uint8_t key[256], data[256];
		int kl = unhex(tc[i].key, key), dl = unhex(tc[i].data, data);
		ipk_hmac(key, (size_t)kl, data, (size_t)dl, d);
		char name[64];
		snprintf(name, sizeof(name), "hmac-sha256 RFC 4231 case %s", names[i]);
		CHECK(name, !strcmp(hex(d), tc[i].mac));
	}
	/* RFC 4231 case 5: truncated to 128 bits */
	uint8_t k5[20], d5[64];
	unhex("0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", k5);
	int l5 = unhex("546573742057697468205472756e636174696f6e", d5);
	ipk_hmac(k5, 20, d5, (size_t)l5, d);
	CHECK("hmac-sha256 RFC 4231 case 5 (truncated)", !strncmp(hex(d), "a3b6167473100ee06e0c796c2955552b", 32));
	CHECK("constant-time compare equal", ipk_ct_memcmp("abcd", "abcd", 4) == 0);
	CHECK("constant-time compare differs", ipk_ct_memcmp("abcd", "abce", 4) != 0);
	CHECK_DONE();
}
