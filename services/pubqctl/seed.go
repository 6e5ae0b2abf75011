package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/edtech/seed"
)

// seedOutput is pubqctl seed --json.
type seedOutput struct {
	Students       int              `json:"students"`
	FirstStudentID int64            `json:"first_student_id"`
	LastStudentID  int64            `json:"last_student_id"`
	Duplicates     int              `json:"duplicates"`
	Related        int64            `json:"related_rows"`
	Rows           map[string]int64 `json:"rows"`
	PairsFile      string           `json:"pairs_file,omitempty"`
	Seconds        float64          `json:"seconds"`
}

func (c *cli) cmdSeed(args []string) error {
	fs := c.flags("seed")
	students := fs.Int("students", 0, "students to create, planted duplicates included (required)")
	related := fs.Int("related", 10, "average rows per student in the other tables")
	rate := fs.Float64("duplicate-rate", 0.02, "fraction of students planted as another account of an earlier one (0..0.5)")
	seedN := fs.Int64("seed", 1, "random seed: the same flags on the same database give the same rows")
	pairs := fs.String("pairs", "", "write the planted pairs to this CSV file (survivor,duplicate), the input of merge --file")
	appendTo := fs.Bool("append", false, "add to a database that already has students")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("seed takes no arguments (got %q)", pos[0])
	}
	if *students <= 0 {
		return usagef("seed needs --students N (N > 0)")
	}
	actor, err := c.actor()
	if err != nil {
		return err
	}
	st, err := c.open()
	if err != nil {
		return err
	}
	pool := st.Pool()
	if err := schema.Apply(c.ctx, pool); err != nil {
		return err
	}
	var existing int64
	if err := pool.QueryRow(c.ctx, `SELECT count(*) FROM students`).Scan(&existing); err != nil {
		return err
	}
	// Synthetic rows mixed into real ones are hard to take out again: only on purpose.
	if existing > 0 && !*appendTo {
		return usagef("seed: students already has %d rows; add --append to add synthetic ones to them", existing)
	}
	var pf *os.File
	if *pairs != "" {
		if pf, err = os.Create(*pairs); err != nil {
			return usagef("--pairs: %w", err)
		}
		defer pf.Close()
	}
	bar := c.bar(*students, "seed")
	start := time.Now()
	res, err := seed.Generate(c.ctx, pool, seed.Options{Students: *students, RelatedPerStudent: *related, DuplicateRate: *rate, Seed: *seedN,
		Progress: func(done, _ int) {
			if bar != nil {
				_ = bar.Set(done)
			}
		}})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return err
	}
	out := seedOutput{Students: *students, FirstStudentID: res.FirstStudentID, LastStudentID: res.LastStudentID,
		Duplicates: len(res.Duplicates), Related: res.Related(), Rows: res.Rows, PairsFile: *pairs, Seconds: time.Since(start).Seconds()}
	if pf != nil {
		if err := csvPairs(pf, res.Duplicates); err != nil {
			return fmt.Errorf("--pairs: %w", err)
		}
	}
	detail, _ := json.Marshal(map[string]any{"students": *students, "first_student_id": res.FirstStudentID,
		"last_student_id": res.LastStudentID, "duplicates": len(res.Duplicates), "related_rows": res.Related(), "seed": *seedN})
	if _, err := pool.Exec(c.ctx, `INSERT INTO pubq.audit (actor, action, detail) VALUES ($1, 'seed', $2)`, actor, detail); err != nil {
		return fmt.Errorf("writing pubq.audit (the rows were seeded): %w", err)
	}
	if c.json {
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "seeded %d students (ids %d..%d) with %d related rows and %d planted duplicates in %s\n",
		out.Students, out.FirstStudentID, out.LastStudentID, out.Related, out.Duplicates, human(time.Since(start)))
	tables := make([]string, 0, len(res.Rows))
	for t := range res.Rows {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "table\trows")
	for _, t := range tables {
		fmt.Fprintf(tw, "%s\t%d\n", t, res.Rows[t])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *pairs != "" {
		fmt.Fprintf(c.stdout, "planted pairs written to %s (pubqctl merge --file %s)\n", *pairs, shellQuote(*pairs))
	}
	return nil
}

func csvPairs(f *os.File, pairs []seed.Pair) error {
	if _, err := fmt.Fprintln(f, "survivor,duplicate"); err != nil {
		return err
	}
	for _, p := range pairs {
		if _, err := fmt.Fprintf(f, "%d,%d\n", p.SurvivorID, p.DuplicateID); err != nil {
			return err
		}
	}
	return f.Close()
}
