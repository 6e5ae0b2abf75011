package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	sessionCookie = "pubq_session"
	csrfField     = "csrf"
)

// token is one accepted credential and the actor it acts as.
type token struct {
	actor  string
	secret []byte
	digest [sha256.Size]byte // of secret, computed once for checkToken
}

// minSecretBytes is the shortest secret Config.Validate accepts.
const minSecretBytes = 16

// tokenName is what may name a token in a "name:secret" entry.
var tokenName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// parseTokens splits "name:secret" entries at the first ':' (the secret may hold more); a bare secret,
// or an empty name, acts as "dashboard". Validate refuses a name that is not tokenName: the actor is
// logged and audited, and a bare secret holding ':' would otherwise put part of itself there.
func parseTokens(entries []string) []token {
	out := make([]token, 0, len(entries))
	for _, e := range entries {
		name, secret := entryParts(e)
		actor := "dashboard"
		if name != "" {
			actor = "dashboard:" + name
		}
		out = append(out, token{actor: actor, secret: []byte(secret), digest: sha256.Sum256([]byte(secret))})
	}
	return out
}

// entryParts is an entry's name ("" for none) and secret.
func entryParts(e string) (name, secret string) {
	e = strings.TrimSpace(e)
	name, secret, ok := strings.Cut(e, ":")
	if !ok {
		return "", e
	}
	return strings.TrimSpace(name), secret
}

// session is an authenticated request.
type session struct {
	actor  string
	csrf   string // the form token bound to this session; empty for bearer requests
	bearer bool   // authenticated by the Authorization header: no ambient credential, no CSRF risk
}

func mac(secret []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strings.Join(parts, "|")))
	return m.Sum(nil)
}

// A session cookie is "<expiry unix>.<HMAC(secret, expiry)>": stateless, so every replica behind a
// load balancer accepts it, it expires on its own, and removing a token from the config ends its
// sessions. It never contains the token itself.
func (h *handler) newSession(t token) string {
	exp := strconv.FormatInt(h.cfg.Now().Add(h.cfg.SessionTTL).Unix(), 10)
	return exp + "." + base64.RawURLEncoding.EncodeToString(mac(t.secret, "pubq-dashboard-session", exp))
}

// checkSession returns the token that signed the cookie value, if it is valid and not expired.
func (h *handler) checkSession(v string) (token, bool) {
	exp, sig, ok := strings.Cut(v, ".")
	if !ok {
		return token{}, false
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || h.cfg.Now().After(time.Unix(n, 0)) {
		return token{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return token{}, false
	}
	for _, t := range h.tokens {
		if hmac.Equal(got, mac(t.secret, "pubq-dashboard-session", exp)) {
			return t, true
		}
	}
	return token{}, false
}

// checkToken finds the token equal to s, comparing in constant time.
func (h *handler) checkToken(s string) (token, bool) {
	if s == "" {
		return token{}, false
	}
	var found token
	ok := 0
	// Compare digests so the comparison time does not depend on the lengths either.
	a := sha256.Sum256([]byte(s))
	for _, t := range h.tokens {
		if subtle.ConstantTimeCompare(a[:], t.digest[:]) == 1 {
			found, ok = t, 1
		}
	}
	return found, ok == 1
}

func csrfToken(t token, cookie string) string {
	return base64.RawURLEncoding.EncodeToString(mac(t.secret, "pubq-dashboard-csrf", cookie))
}

// authenticate returns the request's session: a bearer token, or a session cookie.
func (h *handler) authenticate(r *http.Request) (session, bool, bool) {
	if a := r.Header.Get("Authorization"); a != "" {
		v, ok := strings.CutPrefix(a, "Bearer ")
		if !ok {
			return session{}, false, true
		}
		t, ok := h.checkToken(strings.TrimSpace(v))
		return session{actor: t.actor, bearer: true}, ok, true
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false, false
	}
	t, ok := h.checkSession(c.Value)
	if !ok {
		return session{}, false, false
	}
	return session{actor: t.actor, csrf: csrfToken(t, c.Value)}, true, false
}

func (h *handler) setSessionCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: value, Path: h.cfg.BasePath + "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r),
	})
}

// secureRequest reports whether the browser reached us over HTTPS (directly or through a proxy such
// as Cloud Run's front end), so cookies are marked Secure there and still work on plain local HTTP.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
