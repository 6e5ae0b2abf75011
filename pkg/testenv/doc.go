// Package testenv gives integration tests the real services they run against:
// a Pub/Sub emulator, a fresh PostgreSQL database per test, and the repository's
// binaries built once per test binary.
//
// Every package that uses it declares
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// so that the servers this test binary started are stopped when it ends. A
// server is also killed by the kernel if the test process dies first (Linux
// parent-death signal), so a test timeout never leaks a Java emulator.
//
// Servers are reused when the environment already names one:
//
//	PUBSUB_EMULATOR_HOST     a running Pub/Sub emulator (host:port)
//	PUBQ_TEST_DATABASE_URL   a PostgreSQL server URL on which tests may create databases
//
// Otherwise they are started on demand, once per test binary, through the same
// scripts developers use (infra/emulator.sh run, infra/postgres.sh run). A
// missing emulator or PostgreSQL fails the test with the reason; it never
// skips. PUBQ_START_TIMEOUT (seconds, default 60) bounds each start.
//
// The rest: RepoRoot finds the repository (go.work), BuildBinary builds a
// service's main package once per test binary (with -race when the test binary
// has it) for tests that run the producer or worker as real processes, and
// FreePort picks a port.
//
// Isolation: ProjectID gives each test its own Pub/Sub project, so tests that
// share one emulator never see each other's topics, and Postgres gives each
// test its own database, dropped when the test ends. Both are safe with
// t.Parallel.
package testenv
