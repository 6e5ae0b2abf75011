// Package dashboard is pubq's web UI for on-call, a server-rendered http.Handler over an
// inspect.Inspector: queue overview (counts, rates, failures, stuck jobs, outbox backlog), the
// dead-letter view with per-job and bulk replay, any job by key (attempts, errors, trace links,
// operator history, payload on request), and retry/cancel of scheduled jobs.
//
// It needs no JavaScript. Reading needs a login: a token typed into the login form becomes an
// HttpOnly, SameSite=Strict session cookie (a signed expiry, never the token), or a script sends
// "Authorization: Bearer <token>". Every action is a POST that must carry the session's CSRF token
// (cross-origin POSTs are refused as well), shows a confirmation page first (a dry run for replays),
// and is recorded in pubq.audit under the token's name.
//
// Mount it under a prefix with Config.BasePath:
//
//	mux.Handle("/ui/", dashboard.New(inspect.New(pool, queues), &dashboard.Config{
//		Tokens: tokens, BasePath: "/ui", TraceURL: dashboard.CloudTraceURL(project)}))
package dashboard
