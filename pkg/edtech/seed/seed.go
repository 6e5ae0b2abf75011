package seed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrOptions reports an invalid Options field.
var ErrOptions = errors.New("seed: invalid options")

// Beginner starts a transaction: *pgxpool.Pool, *pgx.Conn or pgx.Tx (a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Options shape the generated data.
type Options struct {
	// Students to create, duplicates included. Required (> 0).
	Students int
	// RelatedPerStudent is the average number of rows per student in the other tables (enrollments,
	// attendance, submissions, grades, messages, ...). Default 10.
	RelatedPerStudent int
	// DuplicateRate is the fraction of students planted as another account of an earlier student,
	// in [0, 0.5]. Default 0.
	DuplicateRate float64
	// Seed makes the data reproducible: the same Options on an empty schema give the same rows.
	Seed int64
	// Progress, when set, is called after each batch with the students written so far.
	Progress func(done, total int)
	// BatchSize is the number of students written per COPY round. Default 10,000.
	BatchSize int
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.RelatedPerStudent == 0 {
		c.RelatedPerStudent = 10
	}
	if c.BatchSize == 0 {
		c.BatchSize = 10_000
	}
	switch {
	case c.Students <= 0:
		return c, fmt.Errorf("%w: Students must be positive, got %d", ErrOptions, c.Students)
	case c.RelatedPerStudent < 0:
		return c, fmt.Errorf("%w: RelatedPerStudent must not be negative, got %d", ErrOptions, c.RelatedPerStudent)
	case c.DuplicateRate < 0 || c.DuplicateRate > 0.5:
		return c, fmt.Errorf("%w: DuplicateRate must be in [0, 0.5], got %g", ErrOptions, c.DuplicateRate)
	case c.BatchSize < 0:
		return c, fmt.Errorf("%w: BatchSize must not be negative, got %d", ErrOptions, c.BatchSize)
	}
	return c, nil
}

// Pair is a planted duplicate: DuplicateID is another account of SurvivorID, the older one.
type Pair struct {
	SurvivorID  int64
	DuplicateID int64
	// Reason says what the accounts share: "email", "name_birth_date" or both, comma-separated.
	Reason string
}

// Result describes what Generate wrote.
type Result struct {
	FirstStudentID, LastStudentID int64
	// Duplicates lists the planted pairs by duplicate id; every other pair of generated students
	// differs in normalised e-mail and in (lower names, birth date).
	Duplicates []Pair
	// Rows counts the rows written per table.
	Rows map[string]int64
}

// Related returns the rows written outside students.
func (r *Result) Related() int64 {
	var n int64
	for t, c := range r.Rows {
		if t != "students" {
			n += c
		}
	}
	return n
}

// The column lists of every COPY, in one place.
var copyColumns = map[string][]string{
	"courses":            {"id", "code", "title"},
	"class_sessions":     {"id", "course_id", "starts_at"},
	"assignments":        {"id", "course_id", "title"},
	"guardians":          {"id", "name"},
	"badges":             {"id", "name"},
	"students":           {"id", "email", "first_name", "last_name", "birth_date"},
	"enrollments":        {"student_id", "course_id"},
	"attendance":         {"student_id", "session_id", "status"},
	"attendance_notes":   {"student_id", "session_id", "note"},
	"messages":           {"sender_id", "recipient_id", "body"},
	"student_profiles":   {"student_id", "display_name", "bio"},
	"submissions":        {"id", "student_id", "assignment_id"},
	"grades":             {"id", "submission_id", "score"},
	"grade_comments":     {"grade_id", "author_student_id", "body"},
	"guardians_students": {"guardian_id", "student_id"},
	"library_loans":      {"student_id", "title"},
	"invoices":           {"id", "student_id", "amount_cents"},
	"payments":           {"invoice_id", "amount_cents"},
	"student_badges":     {"student_id", "badge_id"},
	"forum_posts":        {"id", "author_id", "parent_post_id", "body"},
}

// Tables whose ids the generator assigns (children reference them); the others take their
// identity default.
var explicitIDs = []string{"courses", "class_sessions", "assignments", "guardians", "badges", "students", "submissions", "grades", "invoices", "forum_posts"}

// copyOrder respects the FKs.
var copyOrder = []string{
	"students", "enrollments", "attendance", "attendance_notes", "messages", "student_profiles",
	"submissions", "grades", "grade_comments", "guardians_students", "library_loans", "invoices",
	"payments", "student_badges", "forum_posts",
}

// rates are rows per student per table at RelatedPerStudent = 10 (they sum to about 10).
var rates = map[string]float64{
	"enrollments": 2, "attendance": 2, "attendance_notes": 0.2, "messages": 1, "student_profiles": 0.6,
	"submissions": 1.5, "grades": 0.8, "grade_comments": 0.4, "guardians_students": 0.5, "library_loans": 0.3,
	"invoices": 0.3, "payments": 0.2, "student_badges": 0.3, "forum_posts": 0.3,
}

// Generate writes deterministic students, related rows and planted duplicates into a database
// with the edtech schema, in one transaction, with COPY. It may run on a non-empty database: ids
// continue after the existing ones and the identity sequences are moved past them.
func Generate(ctx context.Context, db Beginner, opts Options) (*Result, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("seed: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	g := &generator{
		tx: tx, o: o,
		rng:   rand.New(rand.NewPCG(uint64(o.Seed), 0x9e3779b97f4a7c15)),
		next:  map[string]int64{},
		res:   &Result{Rows: map[string]int64{}},
		names: map[string]bool{},
	}
	for _, t := range explicitIDs {
		var maxID int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(id), 0)::bigint FROM "+pgx.Identifier{t}.Sanitize()).Scan(&maxID); err != nil {
			return nil, fmt.Errorf("seed: reading ids of %s: %w", t, err)
		}
		g.next[t] = maxID + 1
	}
	if err := g.dimensions(ctx); err != nil {
		return nil, err
	}
	g.res.FirstStudentID = g.next["students"]
	for done := 0; done < o.Students; {
		n := min(o.BatchSize, o.Students-done)
		if err := g.batch(ctx, n); err != nil {
			return nil, err
		}
		done += n
		if o.Progress != nil {
			o.Progress(done, o.Students)
		}
	}
	g.res.LastStudentID = g.next["students"] - 1
	for _, t := range explicitIDs {
		if _, err := tx.Exec(ctx, "SELECT setval(pg_get_serial_sequence($1, 'id'), max(id)) FROM "+pgx.Identifier{t}.Sanitize(),
			pgx.Identifier{t}.Sanitize()); err != nil {
			return nil, fmt.Errorf("seed: moving the id sequence of %s: %w", t, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("seed: commit: %w", err)
	}
	// Fresh statistics, or the first queries on the new rows plan as if the tables were empty.
	conn, err := db.Begin(ctx)
	if err == nil {
		_, err = conn.Exec(ctx, "ANALYZE")
		if err == nil {
			err = conn.Commit(ctx)
		} else {
			_ = conn.Rollback(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("seed: analyze: %w", err)
	}
	return g.res, nil
}

type base struct {
	id                 int64
	email, first, last string
	birth              time.Time
	gmailLocal         string // set for gmail addresses: the local part without dots
}

type generator struct {
	tx    pgx.Tx
	o     Options
	rng   *rand.Rand
	next  map[string]int64
	res   *Result
	names map[string]bool // lower(first|last|birth) of every generated student
	bases []base          // students that are nobody's duplicate

	courses, sessions, assignments, guardians, badges []int64
	sessionsPerCourse                                 int
	rows                                              map[string][][]any
}

func (g *generator) id(table string) int64 {
	v := g.next[table]
	g.next[table]++
	return v
}

func (g *generator) add(table string, row ...any) { g.rows[table] = append(g.rows[table], row) }

func (g *generator) flush(ctx context.Context, tables []string) error {
	for _, t := range tables {
		rows := g.rows[t]
		if len(rows) == 0 {
			continue
		}
		n, err := g.tx.CopyFrom(ctx, pgx.Identifier{t}, copyColumns[t], pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("seed: copying %d rows into %s: %w", len(rows), t, err)
		}
		g.res.Rows[t] += n
	}
	g.rows = map[string][][]any{}
	return nil
}

// dimensions writes the non-student side: courses, sessions, assignments, guardians, badges.
func (g *generator) dimensions(ctx context.Context) error {
	g.rows = map[string][][]any{}
	nCourses := max(10, g.o.Students/100)
	g.sessionsPerCourse = 10
	start := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	for i := range nCourses {
		c := g.id("courses")
		g.courses = append(g.courses, c)
		g.add("courses", c, fmt.Sprintf("C%d-%d", c, i), "Course "+syllables(g.rng, 2))
		for s := range g.sessionsPerCourse {
			id := g.id("class_sessions")
			g.sessions = append(g.sessions, id)
			g.add("class_sessions", id, c, start.Add(time.Duration(s*7*24)*time.Hour))
		}
		for a := range 8 {
			id := g.id("assignments")
			g.assignments = append(g.assignments, id)
			g.add("assignments", id, c, fmt.Sprintf("Assignment %d", a+1))
		}
	}
	for range max(1, g.o.Students/2) {
		id := g.id("guardians")
		g.guardians = append(g.guardians, id)
		g.add("guardians", id, titled(syllables(g.rng, 2))+" "+titled(syllables(g.rng, 3)))
	}
	for i := range 30 {
		id := g.id("badges")
		g.badges = append(g.badges, id)
		g.add("badges", id, fmt.Sprintf("badge %d-%d", id, i))
	}
	return g.flush(ctx, []string{"courses", "class_sessions", "assignments", "guardians", "badges"})
}

var domains = []string{"example.com", "school.edu", "gmail.com", "mail.org"}

// person draws a name and birth date that no generated student has yet.
func (g *generator) person() (first, last string, birth time.Time) {
	for {
		first = titled(syllables(g.rng, 2))
		last = titled(syllables(g.rng, 3))
		birth = time.Date(2004, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, g.rng.IntN(15*365))
		if k := nameKey(first, last, birth); !g.names[k] {
			g.names[k] = true
			return first, last, birth
		}
	}
}

func nameKey(first, last string, birth time.Time) string {
	return strings.ToLower(first) + "|" + strings.ToLower(last) + "|" + birth.Format(time.DateOnly)
}

// freshEmail is unique after normalisation: letters then the student id.
func freshEmail(rng *rand.Rand, first, last string, id int64) (email, gmailLocal string) {
	d := domains[rng.IntN(len(domains))]
	local := fmt.Sprintf("%s.%s%d", strings.ToLower(first), strings.ToLower(last), id)
	if d == "gmail.com" {
		gmailLocal = strings.ReplaceAll(local, ".", "")
	}
	return local + "@" + d, gmailLocal
}

func (g *generator) batch(ctx context.Context, n int) error {
	g.rows = map[string][][]any{}
	scale := float64(g.o.RelatedPerStudent) / 10
	for range n {
		id := g.id("students")
		var email, first, last string
		var birth time.Time
		if len(g.bases) > 0 && g.rng.Float64() < g.o.DuplicateRate {
			b := g.bases[g.rng.IntN(len(g.bases))]
			var reason string
			switch g.rng.IntN(3) {
			case 0: // same e-mail written differently, a different person on paper
				first, last, birth = g.person()
				email, reason = emailVariant(g.rng, b), "email"
			case 1: // same person, new address
				first, last, birth = casing(g.rng, b.first), casing(g.rng, b.last), b.birth
				email, _ = freshEmail(g.rng, first, last, id)
				reason = "name_birth_date"
			default:
				first, last, birth = casing(g.rng, b.first), casing(g.rng, b.last), b.birth
				email, reason = emailVariant(g.rng, b), "email,name_birth_date"
			}
			g.res.Duplicates = append(g.res.Duplicates, Pair{SurvivorID: b.id, DuplicateID: id, Reason: reason})
		} else {
			first, last, birth = g.person()
			var gl string
			email, gl = freshEmail(g.rng, first, last, id)
			g.bases = append(g.bases, base{id: id, email: email, first: first, last: last, birth: birth, gmailLocal: gl})
		}
		g.add("students", id, email, first, last, birth)
		g.related(id, scale)
	}
	return g.flush(ctx, copyOrder)
}

// count draws how many rows of a table a student gets: rate*scale on average.
func (g *generator) count(table string, scale float64) int {
	r := rates[table] * scale
	n := int(r)
	if g.rng.Float64() < r-float64(n) {
		n++
	}
	return n
}

func (g *generator) related(student int64, scale float64) {
	pick := func(ids []int64, k int) []int64 {
		k = min(k, len(ids))
		seen := map[int64]bool{}
		out := make([]int64, 0, k)
		for len(out) < k {
			v := ids[g.rng.IntN(len(ids))]
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
		return out
	}
	someStudent := func() any {
		if g.rng.IntN(5) == 0 || student == g.res.FirstStudentID {
			return nil
		}
		return g.res.FirstStudentID + g.rng.Int64N(student-g.res.FirstStudentID)
	}

	for _, c := range pick(g.courses, g.count("enrollments", scale)) {
		g.add("enrollments", student, c)
	}
	attended := pick(g.sessions, g.count("attendance", scale))
	for _, s := range attended {
		g.add("attendance", student, s, "present")
	}
	if len(attended) > 0 {
		for range g.count("attendance_notes", scale) {
			g.add("attendance_notes", student, attended[g.rng.IntN(len(attended))], "note")
		}
	}
	for range g.count("messages", scale) {
		g.add("messages", student, someStudent(), "hello")
	}
	if g.count("student_profiles", scale) > 0 {
		g.add("student_profiles", student, nil, "bio of "+fmt.Sprint(student))
	}
	subs := pick(g.assignments, g.count("submissions", scale))
	var grades []int64
	for i, a := range subs {
		sid := g.id("submissions")
		g.add("submissions", sid, student, a)
		// grades/submissions ~ 0.8/1.5 of the submissions get a grade.
		if i == 0 || g.rng.Float64() < rates["grades"]/rates["submissions"] {
			gid := g.id("grades")
			grades = append(grades, gid)
			g.add("grades", gid, sid, int64(g.rng.IntN(101)))
		}
	}
	if len(grades) > 0 {
		for range g.count("grade_comments", scale) {
			g.add("grade_comments", grades[g.rng.IntN(len(grades))], someStudent(), "comment")
		}
	}
	for _, gu := range pick(g.guardians, g.count("guardians_students", scale)) {
		g.add("guardians_students", gu, student)
	}
	for range g.count("library_loans", scale) {
		g.add("library_loans", student, "Book "+syllables(g.rng, 2))
	}
	for range g.count("invoices", scale) {
		inv := g.id("invoices")
		amount := int64(1000 + g.rng.IntN(9000))
		g.add("invoices", inv, student, amount)
		if g.rng.Float64() < rates["payments"]/rates["invoices"] {
			g.add("payments", inv, amount)
		}
	}
	for _, b := range pick(g.badges, g.count("student_badges", scale)) {
		g.add("student_badges", student, b)
	}
	var prev any
	for range g.count("forum_posts", scale) {
		p := g.id("forum_posts")
		g.add("forum_posts", p, student, prev, "post")
		prev = p
	}
}

// emailVariant writes b's address the way people retype it: other case, stray spaces, and for
// gmail extra dots and a +tag (all of which edtech_normalize_email folds away).
func emailVariant(rng *rand.Rand, b base) string {
	if b.gmailLocal != "" {
		local := b.gmailLocal
		cut := 1 + rng.IntN(len(local)-1)
		dom := "gmail.com"
		if rng.IntN(2) == 0 {
			dom = "googlemail.com"
		}
		return casing(rng, local[:cut]+"."+local[cut:]) + "+school@" + dom
	}
	v := casing(rng, b.email)
	if rng.IntN(2) == 0 {
		v = " " + v + " "
	}
	if v == b.email {
		v = strings.ToUpper(v)
	}
	return v
}

func casing(rng *rand.Rand, s string) string {
	switch rng.IntN(3) {
	case 0:
		return strings.ToLower(s)
	case 1:
		return strings.ToUpper(s)
	}
	return s
}

var sylls = []string{"ka", "lo", "mi", "ra", "den", "so", "vi", "tan", "el", "mar", "no", "ber", "li", "zu", "an", "cor", "fi", "gu", "ho", "jin", "pe", "qui", "sto", "wen", "ya"}

func syllables(rng *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteString(sylls[rng.IntN(len(sylls))])
	}
	return b.String()
}

func titled(s string) string { return strings.ToUpper(s[:1]) + s[1:] }
