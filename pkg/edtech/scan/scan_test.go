package scan_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/internal/pgtest"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/edtech/seed"
	"github.com/pubq/pubq/pkg/testenv"
)

func seeded(t *testing.T, students int, rate float64) (*pgxpool.Pool, *seed.Result) {
	t.Helper()
	pool := pgtest.Pool(t)
	res, err := seed.Generate(context.Background(), pool, seed.Options{Students: students, RelatedPerStudent: 2, DuplicateRate: rate, Seed: 99})
	if err != nil {
		t.Fatal(err)
	}
	return pool, res
}

func planted(res *seed.Result) []scan.Pair {
	out := make([]scan.Pair, len(res.Duplicates))
	for i, p := range res.Duplicates {
		out[i] = scan.Pair{SurvivorID: p.SurvivorID, DuplicateID: p.DuplicateID, Reason: p.Reason}
	}
	return out
}

func scanAll(t *testing.T, pool *pgxpool.Pool, n int, find func(context.Context, scan.Querier, scan.Range) ([]scan.Pair, error)) []scan.Pair {
	t.Helper()
	ranges, err := scan.Ranges(context.Background(), pool, n)
	if err != nil {
		t.Fatal(err)
	}
	var all []scan.Pair
	for _, r := range ranges {
		ps, err := find(context.Background(), pool, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.DuplicateID < r.First || p.DuplicateID > r.Last {
				t.Fatalf("pair %+v outside its range %+v", p, r)
			}
		}
		all = append(all, ps...)
	}
	return all
}

func TestRanges(t *testing.T) {
	ctx := context.Background()
	pool, res := seeded(t, 1003, 0)
	rs, err := scan.Ranges(ctx, pool, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 || rs[0].First != res.FirstStudentID || rs[3].Last != res.LastStudentID {
		t.Fatalf("ranges %+v for students %d..%d", rs, res.FirstStudentID, res.LastStudentID)
	}
	for i, r := range rs {
		size := r.Last - r.First + 1
		if size < 250 || size > 251 {
			t.Errorf("range %d %+v has %d ids, want 250 or 251", i, r, size)
		}
		if i > 0 && r.First != rs[i-1].Last+1 {
			t.Errorf("gap or overlap between %+v and %+v", rs[i-1], r)
		}
	}
	// Merged accounts are not counted, and the ranges still tile the id space.
	if _, err := pool.Exec(ctx, `UPDATE students SET merged_into = $1 WHERE id BETWEEN $2 AND $3`, res.FirstStudentID, res.FirstStudentID+1, res.FirstStudentID+500); err != nil {
		t.Fatal(err)
	}
	rs, err = scan.Ranges(ctx, pool, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].First != res.FirstStudentID || rs[1].First != rs[0].Last+1 || rs[1].Last != res.LastStudentID {
		t.Fatalf("ranges with merged accounts: %+v", rs)
	}
	if n := rs[1].Last - rs[1].First + 1; n != 251 {
		t.Fatalf("second range holds %d ids, want the 251 upper live students", n)
	}

	more, err := scan.Ranges(ctx, pool, 10000)
	if err != nil || len(more) != 503 {
		t.Fatalf("asking for more ranges than students: %d ranges, %v", len(more), err)
	}
	if _, err := scan.Ranges(ctx, pool, 0); !errors.Is(err, scan.ErrRanges) {
		t.Fatalf("n=0: %v", err)
	}
	empty := pgtest.Pool(t)
	if rs, err := scan.Ranges(ctx, empty, 8); err != nil || len(rs) != 0 {
		t.Fatalf("empty table: %+v %v", rs, err)
	}
}

func TestFindCandidatesFindsExactlyThePlantedPairs(t *testing.T) {
	pool, res := seeded(t, 4000, 0.08)
	want := planted(res)
	if len(want) < 200 {
		t.Fatalf("only %d planted pairs", len(want))
	}
	for _, n := range []int{1, 7} {
		if got := scanAll(t, pool, n, scan.FindCandidates); !reflect.DeepEqual(got, want) {
			t.Fatalf("%d ranges: %d pairs, want the %d planted ones\nfirst got %v\nfirst want %v", n, len(got), len(want), head(got), head(want))
		}
	}
}

func head(ps []scan.Pair) []scan.Pair { return ps[:min(5, len(ps))] }

func TestNaiveAgreesWithBatched(t *testing.T) {
	pool, _ := seeded(t, 2500, 0.1)
	// Muddy the water: a merged account, a NULL birth date, a three-way match.
	mustExec(t, pool, `UPDATE students SET merged_into = (SELECT min(id) FROM students) WHERE id = (SELECT min(id) + 10 FROM students)`)
	// More merged accounts, each into an older live one, so matches through them count.
	mustExec(t, pool, `UPDATE students s SET merged_into = s.id - 7 FROM (SELECT min(id) AS lo FROM students) x
		WHERE s.id % 41 = 0 AND s.id - 7 >= x.lo AND (s.id - 7) % 41 <> 0 AND s.id - 7 <> x.lo + 10`)
	mustExec(t, pool, `UPDATE students SET birth_date = NULL WHERE id % 97 = 0`)
	mustExec(t, pool, `INSERT INTO students (email, first_name, last_name, birth_date)
		SELECT ' ' || upper(email), first_name, last_name, birth_date FROM students WHERE id % 50 = 3`)
	for _, n := range []int{1, 5} {
		batched := scanAll(t, pool, n, scan.FindCandidates)
		naive := scanAll(t, pool, n, scan.FindCandidatesNaive)
		if !reflect.DeepEqual(batched, naive) {
			t.Fatalf("%d ranges: batched %d pairs, naive %d pairs", n, len(batched), len(naive))
		}
		if len(batched) == 0 {
			t.Fatal("no pairs at all")
		}
	}
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestCandidateRules(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	ins := func(email, first, last, birth string) int64 {
		t.Helper()
		var id int64
		var b any
		if birth != "" {
			b = birth
		}
		if err := pool.QueryRow(ctx, `INSERT INTO students (email, first_name, last_name, birth_date) VALUES ($1, $2, $3, $4::date) RETURNING id`,
			email, first, last, b).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	a := ins("jo.ann@gmail.com", "Jo", "Ann", "2009-01-01")
	b := ins("  JoAnn+school@googlemail.com", "Joanna", "Other", "2009-01-01") // gmail dots/+tag/domain
	c := ins("joann@gmail.com ", "JO", "ANN", "2009-01-01")                    // email and name
	d := ins("pat@example.com", "Pat", "Lee", "")
	e := ins("pat.lee@example.com", "pat", "lee", "") // NULL birth date: no name match
	f := ins("p.at@example.com", "X", "Y", "2000-01-01")
	g := ins("PAT@example.com", "Pat", "Lee", "2010-02-02") // email match with d only
	h := ins("sam@school.edu", "Sam", "Roe", "2001-05-05")
	i := ins("sam.roe@school.edu", "sam", "roe", "2001-05-05") // name only
	// An older name match (h) and a newer e-mail match: the oldest wins.
	j := ins("sam.roe@school.edu", "Sam", "Roe", "2001-05-05")

	got, err := scan.FindCandidates(ctx, pool, scan.Range{First: a, Last: j})
	if err != nil {
		t.Fatal(err)
	}
	want := []scan.Pair{
		{SurvivorID: a, DuplicateID: b, Reason: "email"},
		{SurvivorID: a, DuplicateID: c, Reason: "email,name_birth_date"},
		{SurvivorID: d, DuplicateID: g, Reason: "email"},
		{SurvivorID: h, DuplicateID: i, Reason: "name_birth_date"},
		{SurvivorID: h, DuplicateID: j, Reason: "name_birth_date"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	_, _ = e, f // e (NULL birth date) and f (dots outside gmail) match nobody

	// Only the newer account must lie in the range.
	got, err = scan.FindCandidates(ctx, pool, scan.Range{First: i, Last: j})
	if err != nil || len(got) != 2 || got[0].SurvivorID != h {
		t.Fatalf("range holding only the newer accounts: %+v %v", got, err)
	}

	// Once a is merged into c (say), neither is paired through a merged account: b's oldest live
	// match is c.
	mergeNow(t, pool, c, a)
	got, err = scan.FindCandidates(ctx, pool, scan.Range{First: a, Last: c})
	if err != nil {
		t.Fatal(err)
	}
	if want := []scan.Pair{{SurvivorID: b, DuplicateID: c, Reason: "email"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after merging a into c: %+v, want %+v", got, want)
	}
	naive, err := scan.FindCandidatesNaive(ctx, pool, scan.Range{First: a, Last: c})
	if err != nil || !reflect.DeepEqual(naive, got) {
		t.Fatalf("naive after merge: %+v %v", naive, err)
	}

	// A match merged away stands for its live root. (a) P and Q share an e-mail; R matches only Q, by
	// name. Q is merged into P before R's range is scanned: R is paired with P, not with nobody.
	// (b) S matches only U's e-mail, U (newer) is merged into an older T: S is paired with T.
	p := ins("kim@example.org", "Kim", "Park", "2008-08-08")
	q := ins("KIM@example.org ", "Kimberly", "Park", "2008-09-09")
	r := ins("other@example.org", "kimberly", "park", "2008-09-09")
	tt := ins("lee.t@example.org", "Tae", "Lee", "2007-07-07")
	su := ins("tae.lee@example.org", "T", "Lee", "")
	u := ins("tae.lee@example.org", "tae", "lee", "2007-07-07")
	mergeNow(t, pool, p, q)
	mergeNow(t, pool, tt, u)
	got, err = scan.FindCandidates(ctx, pool, scan.Range{First: p, Last: u})
	if err != nil {
		t.Fatal(err)
	}
	want = []scan.Pair{
		{SurvivorID: p, DuplicateID: r, Reason: "name_birth_date"},
		{SurvivorID: tt, DuplicateID: su, Reason: "email"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("through merged accounts: %+v, want %+v", got, want)
	}
	naive, err = scan.FindCandidatesNaive(ctx, pool, scan.Range{First: p, Last: u})
	if err != nil || !reflect.DeepEqual(naive, got) {
		t.Fatalf("naive through merged accounts: %+v %v", naive, err)
	}
}

func TestFindCandidatesErrors(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	for _, find := range []func(context.Context, scan.Querier, scan.Range) ([]scan.Pair, error){scan.FindCandidates, scan.FindCandidatesNaive, scan.ScanRange} {
		if _, err := find(ctx, pool, scan.Range{First: 5, Last: 4}); !errors.Is(err, scan.ErrRange) {
			t.Errorf("inverted range: %v", err)
		}
	}
	// A database without the schema: the error says what was being done.
	bare, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if _, err := scan.FindCandidates(ctx, bare, scan.Range{First: 1, Last: 10}); err == nil || !strings.Contains(err.Error(), "scan: finding candidates in 1..10") {
		t.Fatalf("no schema: %v", err)
	}
	if _, err := scan.FindCandidatesNaive(ctx, bare, scan.Range{First: 1, Last: 10}); err == nil {
		t.Fatal("naive scan without a schema succeeded")
	}
	if _, err := scan.Ranges(ctx, bare, 3); err == nil {
		t.Fatal("Ranges without a schema succeeded")
	}
}

func TestRuleAndRequests(t *testing.T) {
	ctx := context.Background()
	p := scan.Pair{SurvivorID: 1, DuplicateID: 2, Reason: "email"}
	for mode, dry := range map[scan.Mode]bool{"": true, scan.ModeDryRun: true, scan.ModeAuto: false} {
		r := scan.Rule{Mode: mode}
		if err := r.Validate(); err != nil {
			t.Fatalf("%q: %v", mode, err)
		}
		if got := r.Request(p); got != (merge.MergeRequest{SurvivorID: 1, DuplicateID: 2, DryRun: dry}) {
			t.Errorf("%q: %+v", mode, got)
		}
	}
	if err := (scan.Rule{Mode: "yolo"}).Validate(); !errors.Is(err, scan.ErrMode) {
		t.Fatalf("unknown mode: %v", err)
	}

	// The schedule's payload ({ranges: 64, mode: dry_run}) decodes and fans out.
	var req scan.ScanRequest
	if err := json.Unmarshal([]byte(`{"ranges": 3, "mode": "auto"}`), &req); err != nil {
		t.Fatal(err)
	}
	pool, _ := seeded(t, 300, 0.1)
	jobs, err := scan.Split(ctx, pool, req)
	if err != nil || len(jobs) != 3 || jobs[0].Mode != scan.ModeAuto {
		t.Fatalf("Split: %+v %v", jobs, err)
	}
	js, _ := json.Marshal(jobs[0])
	var back scan.RangeRequest
	if err := json.Unmarshal(js, &back); err != nil || back != jobs[0] {
		t.Fatalf("RangeRequest JSON %s: %+v %v", js, back, err)
	}
	if _, err := scan.Split(ctx, pool, scan.ScanRequest{Ranges: 3, Mode: "sometimes"}); !errors.Is(err, scan.ErrMode) {
		t.Fatalf("Split with a bad mode: %v", err)
	}
	if _, err := scan.Split(ctx, pool, scan.ScanRequest{Ranges: 0}); !errors.Is(err, scan.ErrRanges) {
		t.Fatalf("Split with no ranges: %v", err)
	}
}

// mergeNow merges duplicate into survivor and commits.
func mergeNow(t *testing.T, pool *pgxpool.Pool, survivor, duplicate int64) {
	t.Helper()
	if _, err := pgtest.MergeCommit(t, pool, survivor, duplicate, merge.Options{}); err != nil {
		t.Fatal(err)
	}
}
