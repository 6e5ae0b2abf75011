package check

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// Module is one parsed Terraform module directory.
type Module struct {
	Dir       string
	Variables map[string]*Variable
	Locals    map[string]*hclsyntax.Attribute
	Resources map[string]*ResourceBlock // "type.name" for resources, "data.type.name" for data sources
	Calls     map[string]*Call
	Outputs   map[string]*hclsyntax.Attribute // the output's value
}

// Variable is a declared input variable.
type Variable struct {
	Name        string
	Type        cty.Type
	Defaults    *typeexpr.Defaults
	Default     cty.Value // cty.NilVal when the variable is required
	Nullable    bool
	Validations []*hclsyntax.Block
}

// ResourceBlock is a resource or data block before expansion into instances.
type ResourceBlock struct {
	Data       bool
	Type, Name string
	Body       *hclsyntax.Body
}

// Call is a module block.
type Call struct {
	Name   string
	Source string
	Body   *hclsyntax.Body
}

// Instance is one evaluated resource or data source instance.
type Instance struct {
	Module string    // module path: "" for the root, else `module.queue["critical"]`
	Data   bool      // a data source
	Type   string    // e.g. google_pubsub_topic
	Name   string    // block label
	Key    cty.Value // count index or for_each key; cty.NilVal for a single instance
	Attrs  cty.Value // object: arguments, nested blocks (tuples of objects) and known computed attributes
}

// Address is the instance's Terraform address.
func (i *Instance) Address() string {
	var b strings.Builder
	if i.Module != "" {
		b.WriteString(i.Module + ".")
	}
	if i.Data {
		b.WriteString("data.")
	}
	b.WriteString(i.Type + "." + i.Name + keySuffix(i.Key))
	return b.String()
}

func keySuffix(k cty.Value) string {
	switch {
	case k == cty.NilVal:
		return ""
	case k.Type() == cty.String:
		return fmt.Sprintf("[%q]", k.AsString())
	default:
		return "[" + k.AsBigFloat().Text('f', -1) + "]"
	}
}

// Plan is the evaluated configuration: every resource instance with its arguments, and the root outputs.
type Plan struct {
	Instances []*Instance // sorted by address
	Outputs   map[string]cty.Value
}

// Find returns the instances of a resource type in any module, optionally only those with the given name.
func (p *Plan) Find(typ, name string) []*Instance {
	var out []*Instance
	for _, i := range p.Instances {
		if i.Type == typ && (name == "" || i.Name == name) {
			out = append(out, i)
		}
	}
	return out
}

// Lookup returns the instance at address, e.g. `module.worker.google_service_account.this`.
func (p *Plan) Lookup(address string) (*Instance, bool) {
	for _, i := range p.Instances {
		if i.Address() == address {
			return i, true
		}
	}
	return nil, false
}

// LoadModule parses every .tf file in dir.
func LoadModule(dir string) (*Module, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("check: no .tf files in %s", dir)
	}
	m := &Module{
		Dir:       dir,
		Variables: map[string]*Variable{},
		Locals:    map[string]*hclsyntax.Attribute{},
		Resources: map[string]*ResourceBlock{},
		Calls:     map[string]*Call{},
		Outputs:   map[string]*hclsyntax.Attribute{},
	}
	parser := hclparse.NewParser()
	var errs []error
	for _, path := range files {
		f, diags := parser.ParseHCLFile(path)
		if diags.HasErrors() {
			errs = append(errs, diags)
			continue
		}
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			if err := m.addBlock(b); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", b.DefRange(), err))
			}
		}
	}
	return m, errors.Join(errs...)
}

func (m *Module) addBlock(b *hclsyntax.Block) error {
	dup := func(kind, name string) error { return fmt.Errorf("duplicate %s %q", kind, name) }
	switch b.Type {
	case "terraform", "provider", "moved", "import", "removed", "check":
		return nil
	case "variable":
		v, err := parseVariable(b)
		if err != nil {
			return err
		}
		if m.Variables[v.Name] != nil {
			return dup("variable", v.Name)
		}
		m.Variables[v.Name] = v
	case "locals":
		for name, a := range b.Body.Attributes {
			if m.Locals[name] != nil {
				return dup("local", name)
			}
			m.Locals[name] = a
		}
	case "resource", "data":
		r := &ResourceBlock{Data: b.Type == "data", Type: b.Labels[0], Name: b.Labels[1], Body: b.Body}
		key := r.Type + "." + r.Name
		if r.Data {
			key = "data." + key
		}
		if m.Resources[key] != nil {
			return dup(b.Type, key)
		}
		m.Resources[key] = r
	case "module":
		src, ok := b.Body.Attributes["source"]
		if !ok {
			return fmt.Errorf("module %q: source is required", b.Labels[0])
		}
		v, diags := src.Expr.Value(nil)
		if diags.HasErrors() || v.Type() != cty.String {
			return fmt.Errorf("module %q: source must be a literal string", b.Labels[0])
		}
		if m.Calls[b.Labels[0]] != nil {
			return dup("module", b.Labels[0])
		}
		m.Calls[b.Labels[0]] = &Call{Name: b.Labels[0], Source: v.AsString(), Body: b.Body}
	case "output":
		a, ok := b.Body.Attributes["value"]
		if !ok {
			return fmt.Errorf("output %q: value is required", b.Labels[0])
		}
		if m.Outputs[b.Labels[0]] != nil {
			return dup("output", b.Labels[0])
		}
		m.Outputs[b.Labels[0]] = a
	default:
		return fmt.Errorf("unsupported block type %q", b.Type)
	}
	return nil
}

func parseVariable(b *hclsyntax.Block) (*Variable, error) {
	v := &Variable{Name: b.Labels[0], Type: cty.DynamicPseudoType, Nullable: true}
	if a, ok := b.Body.Attributes["type"]; ok {
		ty, defaults, diags := typeexpr.TypeConstraintWithDefaults(a.Expr)
		if diags.HasErrors() {
			return nil, diags
		}
		v.Type, v.Defaults = ty, defaults
	}
	if a, ok := b.Body.Attributes["nullable"]; ok {
		n, diags := a.Expr.Value(nil)
		if diags.HasErrors() || n.Type() != cty.Bool || n.IsNull() {
			return nil, fmt.Errorf("variable %q: nullable must be a literal bool", v.Name)
		}
		v.Nullable = n.True()
	}
	if a, ok := b.Body.Attributes["default"]; ok {
		d, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, diags
		}
		cd, err := v.convert(d)
		if err != nil {
			return nil, fmt.Errorf("variable %q: default: %w", v.Name, err)
		}
		v.Default = cd
	}
	for _, nb := range b.Body.Blocks {
		if nb.Type == "validation" {
			v.Validations = append(v.Validations, nb)
		}
	}
	return v, nil
}

func (v *Variable) convert(val cty.Value) (cty.Value, error) {
	if v.Defaults != nil && !val.IsNull() {
		val = v.Defaults.Apply(val)
	}
	return convert.Convert(val, v.Type)
}

// Build evaluates the root module in dir with the given input variables, following local module calls,
// and returns every resource instance. Errors name the file and line; failed preconditions and
// variable validations are errors too.
func Build(dir string, vars map[string]cty.Value) (*Plan, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b := &builder{rootDir: abs, modules: map[string]*Module{}, plan: &Plan{}, funcs: terraformFunctions(abs)}
	root, err := b.instantiate(abs, "", vars)
	if err != nil {
		return nil, err
	}
	err = root.evalAll()
	b.plan.Outputs = map[string]cty.Value{}
	for name := range root.mod.Outputs {
		if v, ok := root.outputs[name]; ok {
			b.plan.Outputs[name] = v
		}
	}
	sort.Slice(b.plan.Instances, func(i, j int) bool {
		return b.plan.Instances[i].Address() < b.plan.Instances[j].Address()
	})
	return b.plan, err
}

type builder struct {
	rootDir string
	modules map[string]*Module
	plan    *Plan
	funcs   map[string]function.Function // the Terraform functions the configuration may call
}

func (b *builder) load(dir string) (*Module, error) {
	if m, ok := b.modules[dir]; ok {
		return m, nil
	}
	m, err := LoadModule(dir)
	if err != nil {
		return nil, err
	}
	b.modules[dir] = m
	return m, nil
}

// moduleInstance evaluates one instance of a module lazily: each local, resource, call and output is
// evaluated on first reference and cached.
type moduleInstance struct {
	b       *builder
	mod     *Module
	path    string
	vars    map[string]cty.Value
	locals  map[string]cty.Value
	res     map[string]cty.Value // "type.name" => instance object, tuple (count) or object by key (for_each)
	calls   map[string]cty.Value
	outputs map[string]cty.Value
	busy    map[string]bool
	failed  map[string]bool // evaluated with an error, already in errs
	errs    []error         // each failure once, where it happened
}

// errDependency is returned for a reference to something that failed to evaluate; the failure itself is
// reported once, where it happened.
var errDependency = errors.New("check: depends on a value that failed to evaluate")

// settle records err for key (once) and reports errDependency to the caller, so that one broken
// expression is reported once however often it is referenced.
func (mi *moduleInstance) settle(key string, err error) error {
	mi.failed[key] = true
	if !errors.Is(err, errDependency) || !onlyDependency(err) {
		mi.errs = append(mi.errs, err)
	}
	return errDependency
}

// onlyDependency reports whether err consists of errDependency alone (possibly joined).
func onlyDependency(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyDependency(e) {
				return false
			}
		}
		return true
	}
	return err == errDependency
}

func (b *builder) instantiate(dir, path string, inputs map[string]cty.Value) (*moduleInstance, error) {
	mod, err := b.load(dir)
	if err != nil {
		return nil, err
	}
	mi := &moduleInstance{
		b: b, mod: mod, path: path, vars: map[string]cty.Value{},
		locals: map[string]cty.Value{}, res: map[string]cty.Value{}, calls: map[string]cty.Value{},
		outputs: map[string]cty.Value{}, busy: map[string]bool{}, failed: map[string]bool{},
	}
	var errs []error
	for name := range inputs {
		if mod.Variables[name] == nil {
			errs = append(errs, fmt.Errorf("%s: unsupported argument %q: no such variable", mi.where(), name))
		}
	}
	for name, v := range mod.Variables {
		val, given := inputs[name]
		switch {
		case given && !(val.IsNull() && !v.Nullable):
		case v.Default != cty.NilVal:
			val = v.Default
		default:
			errs = append(errs, fmt.Errorf("%s: variable %q is required", mi.where(), name))
			continue
		}
		cv, err := v.convert(val)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: variable %q: %w", mi.where(), name, err))
			continue
		}
		mi.vars[name] = cv
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, name := range sortedKeys(mod.Variables) {
		for _, vb := range mod.Variables[name].Validations {
			if err := mi.assert(vb.Body, nil, fmt.Sprintf("variable %q", name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return mi, errors.Join(errs...)
}

func (mi *moduleInstance) where() string {
	if mi.path == "" {
		return "root module"
	}
	return mi.path
}

// assert evaluates a validation/precondition body: condition must be true.
func (mi *moduleInstance) assert(body *hclsyntax.Body, scope map[string]cty.Value, what string) error {
	cond, ok := body.Attributes["condition"]
	if !ok {
		return fmt.Errorf("%s: %s: condition is required", mi.where(), what)
	}
	v, err := mi.eval(cond.Expr, scope)
	if err != nil {
		return err
	}
	if v.IsNull() || v.Type() != cty.Bool {
		return fmt.Errorf("%s: %s: condition must be a bool", mi.where(), what)
	}
	if v.False() {
		msg := "condition failed"
		if m, ok := body.Attributes["error_message"]; ok {
			if mv, err := mi.eval(m.Expr, scope); err == nil && mv.Type() == cty.String && !mv.IsNull() {
				msg = mv.AsString()
			}
		}
		return fmt.Errorf("%s: %s: %s (%s)", mi.where(), what, msg, cond.SrcRange)
	}
	return nil
}

// evalAll forces every local, resource, call and output; it returns each failure once.
func (mi *moduleInstance) evalAll() error {
	for _, name := range sortedKeys(mi.mod.Locals) {
		_, _ = mi.local(name)
	}
	for _, key := range sortedKeys(mi.mod.Resources) {
		_, _ = mi.resource(key)
	}
	for _, name := range sortedKeys(mi.mod.Calls) {
		_, _ = mi.call(name)
	}
	for _, name := range sortedKeys(mi.mod.Outputs) {
		_, _ = mi.output(name)
	}
	return errors.Join(dedupe(mi.errs)...)
}

func (mi *moduleInstance) enter(key string) error {
	if mi.busy[key] {
		return fmt.Errorf("%s: cycle through %s", mi.where(), key)
	}
	mi.busy[key] = true
	return nil
}

func (mi *moduleInstance) local(name string) (cty.Value, error) {
	if v, ok := mi.locals[name]; ok {
		return v, nil
	}
	if mi.failed["local."+name] {
		return cty.NilVal, errDependency
	}
	a, ok := mi.mod.Locals[name]
	if !ok {
		return cty.NilVal, fmt.Errorf("%s: reference to undeclared local.%s", mi.where(), name)
	}
	if err := mi.enter("local." + name); err != nil {
		return cty.NilVal, err
	}
	defer delete(mi.busy, "local."+name)
	v, err := mi.eval(a.Expr, nil)
	if err != nil {
		return cty.NilVal, mi.settle("local."+name, err)
	}
	mi.locals[name] = v
	return v, nil
}

func (mi *moduleInstance) output(name string) (cty.Value, error) {
	if v, ok := mi.outputs[name]; ok {
		return v, nil
	}
	if mi.failed["output."+name] {
		return cty.NilVal, errDependency
	}
	a, ok := mi.mod.Outputs[name]
	if !ok {
		return cty.NilVal, fmt.Errorf("%s: no output %q", mi.where(), name)
	}
	if err := mi.enter("output." + name); err != nil {
		return cty.NilVal, err
	}
	defer delete(mi.busy, "output."+name)
	v, err := mi.eval(a.Expr, nil)
	if err != nil {
		return cty.NilVal, mi.settle("output."+name, err)
	}
	mi.outputs[name] = v
	return v, nil
}

// expansion is one instance key and its each/count scope.
type expansion struct {
	key   cty.Value
	scope map[string]cty.Value
}

// expand evaluates count or for_each of a resource or module block.
func (mi *moduleInstance) expand(body *hclsyntax.Body, what string) ([]expansion, bool, error) {
	fe, hasFE := body.Attributes["for_each"]
	cnt, hasCount := body.Attributes["count"]
	switch {
	case hasFE && hasCount:
		return nil, false, fmt.Errorf("%s: %s: count and for_each are exclusive", mi.where(), what)
	case hasCount:
		v, err := mi.eval(cnt.Expr, nil)
		if err != nil {
			return nil, false, err
		}
		v, err = convert.Convert(v, cty.Number)
		if err != nil || v.IsNull() {
			return nil, false, fmt.Errorf("%s: %s: count must be a number", mi.where(), what)
		}
		n, acc := v.AsBigFloat().Int64()
		if acc != 0 || n < 0 {
			return nil, false, fmt.Errorf("%s: %s: count must be a whole number >= 0", mi.where(), what)
		}
		out := make([]expansion, n)
		for i := range out {
			k := cty.NumberIntVal(int64(i))
			out[i] = expansion{key: k, scope: map[string]cty.Value{"count": cty.ObjectVal(map[string]cty.Value{"index": k})}}
		}
		return out, true, nil
	case hasFE:
		v, err := mi.eval(fe.Expr, nil)
		if err != nil {
			return nil, false, err
		}
		ty := v.Type()
		if v.IsNull() || !(ty.IsMapType() || ty.IsObjectType() || (ty.IsSetType() && ty.ElementType() == cty.String)) {
			return nil, false, fmt.Errorf("%s: %s: for_each must be a map or a set of strings, not %s (%s)",
				mi.where(), what, ty.FriendlyName(), fe.SrcRange)
		}
		var out []expansion
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			if ty.IsSetType() {
				k = ev
			}
			each := cty.ObjectVal(map[string]cty.Value{"key": k, "value": ev})
			out = append(out, expansion{key: k, scope: map[string]cty.Value{"each": each}})
		}
		return out, true, nil
	}
	return []expansion{{key: cty.NilVal}}, false, nil
}

// resource evaluates every instance of a resource or data block.
func (mi *moduleInstance) resource(key string) (cty.Value, error) {
	if v, ok := mi.res[key]; ok {
		return v, nil
	}
	if mi.failed[key] {
		return cty.NilVal, errDependency
	}
	rb, ok := mi.mod.Resources[key]
	if !ok {
		return cty.NilVal, fmt.Errorf("%s: reference to undeclared resource %s", mi.where(), key)
	}
	if err := mi.enter(key); err != nil {
		return cty.NilVal, err
	}
	defer delete(mi.busy, key)
	exps, multi, err := mi.expand(rb.Body, key)
	if err != nil {
		return cty.NilVal, mi.settle(key, err)
	}
	var errs []error
	var insts []*Instance
	byKey := map[string]cty.Value{}
	var list []cty.Value
	for _, e := range exps {
		attrs, err := mi.evalBody(rb.Body, e.scope, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		attrs = withComputed(rb, attrs, mi)
		inst := &Instance{Module: mi.path, Data: rb.Data, Type: rb.Type, Name: rb.Name, Key: e.key, Attrs: attrs}
		for _, lb := range rb.Body.Blocks {
			if lb.Type != "lifecycle" {
				continue
			}
			for _, pb := range lb.Body.Blocks {
				if pb.Type == "precondition" {
					if err := mi.assert(pb.Body, e.scope, inst.Address()+" precondition"); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		insts = append(insts, inst)
		if e.key != cty.NilVal && e.key.Type() == cty.String {
			byKey[e.key.AsString()] = attrs
		}
		list = append(list, attrs)
	}
	if len(errs) > 0 {
		return cty.NilVal, mi.settle(key, errors.Join(errs...))
	}
	mi.b.plan.Instances = append(mi.b.plan.Instances, insts...)
	var v cty.Value
	switch {
	case !multi:
		v = list[0]
	case rb.Body.Attributes["count"] != nil:
		v = cty.TupleVal(list)
		if len(list) == 0 {
			v = cty.EmptyTupleVal
		}
	default:
		v = cty.ObjectVal(byKey)
		if len(byKey) == 0 {
			v = cty.EmptyObjectVal
		}
	}
	mi.res[key] = v
	return v, nil
}

// metaArgs are resource/module arguments that are not part of the resource's own schema.
var metaArgs = map[string]bool{"count": true, "for_each": true, "depends_on": true, "provider": true, "providers": true, "source": true, "version": true}

// evalBody evaluates a block body into an object: attributes, nested blocks as tuples of objects
// (dynamic blocks expanded).
func (mi *moduleInstance) evalBody(body *hclsyntax.Body, scope map[string]cty.Value, top bool) (cty.Value, error) {
	attrs := map[string]cty.Value{}
	var errs []error
	for name, a := range body.Attributes {
		if top && metaArgs[name] {
			continue
		}
		v, err := mi.eval(a.Expr, scope)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		attrs[name] = v
	}
	blocks := map[string][]cty.Value{}
	for _, b := range body.Blocks {
		switch {
		case top && (b.Type == "lifecycle" || b.Type == "provisioner" || b.Type == "connection"):
			continue
		case b.Type == "dynamic":
			vals, err := mi.evalDynamic(b, scope)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			blocks[b.Labels[0]] = append(blocks[b.Labels[0]], vals...)
		default:
			v, err := mi.evalBody(b.Body, scope, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			blocks[b.Type] = append(blocks[b.Type], v)
		}
	}
	if len(errs) > 0 {
		return cty.NilVal, errors.Join(errs...)
	}
	for name, vals := range blocks {
		if _, clash := attrs[name]; clash {
			return cty.NilVal, fmt.Errorf("%s: %q is both an argument and a block", mi.where(), name)
		}
		attrs[name] = cty.TupleVal(vals)
	}
	return cty.ObjectVal(attrs), nil
}

func (mi *moduleInstance) evalDynamic(b *hclsyntax.Block, scope map[string]cty.Value) ([]cty.Value, error) {
	if len(b.Labels) != 1 {
		return nil, fmt.Errorf("%s: dynamic block needs one label", b.DefRange())
	}
	iter := b.Labels[0]
	if a, ok := b.Body.Attributes["iterator"]; ok {
		iter = hcl.ExprAsKeyword(a.Expr)
		if iter == "" {
			return nil, fmt.Errorf("%s: iterator must be a name", a.SrcRange)
		}
	}
	fe, ok := b.Body.Attributes["for_each"]
	if !ok {
		return nil, fmt.Errorf("%s: dynamic block needs for_each", b.DefRange())
	}
	var content *hclsyntax.Body
	for _, cb := range b.Body.Blocks {
		if cb.Type == "content" {
			content = cb.Body
		}
	}
	if content == nil {
		return nil, fmt.Errorf("%s: dynamic block needs a content block", b.DefRange())
	}
	coll, err := mi.eval(fe.Expr, scope)
	if err != nil {
		return nil, err
	}
	if coll.IsNull() || !coll.CanIterateElements() {
		return nil, fmt.Errorf("%s: dynamic for_each must be a collection", fe.SrcRange)
	}
	var out []cty.Value
	for it := coll.ElementIterator(); it.Next(); {
		k, v := it.Element()
		inner := map[string]cty.Value{}
		for n, sv := range scope {
			inner[n] = sv
		}
		inner[iter] = cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})
		val, err := mi.evalBody(content, inner, false)
		if err != nil {
			return nil, err
		}
		out = append(out, val)
	}
	return out, nil
}

// call evaluates a module call: its instances and their outputs.
func (mi *moduleInstance) call(name string) (cty.Value, error) {
	if v, ok := mi.calls[name]; ok {
		return v, nil
	}
	if mi.failed["module."+name] {
		return cty.NilVal, errDependency
	}
	c, ok := mi.mod.Calls[name]
	if !ok {
		return cty.NilVal, fmt.Errorf("%s: reference to undeclared module.%s", mi.where(), name)
	}
	if !strings.HasPrefix(c.Source, "./") && !strings.HasPrefix(c.Source, "../") {
		return cty.NilVal, mi.settle("module."+name, fmt.Errorf("%s: module %q: only local sources are supported, not %q", mi.where(), name, c.Source))
	}
	if err := mi.enter("module." + name); err != nil {
		return cty.NilVal, err
	}
	defer delete(mi.busy, "module."+name)
	exps, multi, err := mi.expand(c.Body, "module."+name)
	if err != nil {
		return cty.NilVal, mi.settle("module."+name, err)
	}
	dir := filepath.Join(mi.mod.Dir, c.Source)
	byKey := map[string]cty.Value{}
	var single cty.Value
	var errs []error
	for _, e := range exps {
		inputs := map[string]cty.Value{}
		for an, a := range c.Body.Attributes {
			if metaArgs[an] {
				continue
			}
			v, err := mi.eval(a.Expr, e.scope)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			inputs[an] = v
		}
		path := "module." + name + keySuffix(e.key)
		if mi.path != "" {
			path = mi.path + "." + path
		}
		child, err := mi.b.instantiate(dir, path, inputs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := child.evalAll(); err != nil {
			errs = append(errs, err)
			continue
		}
		out := cty.EmptyObjectVal
		if len(child.outputs) > 0 {
			out = cty.ObjectVal(child.outputs)
		}
		if multi {
			if e.key.Type() != cty.String {
				return cty.NilVal, mi.settle("module."+name, fmt.Errorf("%s: module %q: only for_each is supported for modules", mi.where(), name))
			}
			byKey[e.key.AsString()] = out
		} else {
			single = out
		}
	}
	if len(errs) > 0 {
		return cty.NilVal, mi.settle("module."+name, errors.Join(errs...))
	}
	v := single
	if multi {
		v = cty.EmptyObjectVal
		if len(byKey) > 0 {
			v = cty.ObjectVal(byKey)
		}
	}
	mi.calls[name] = v
	return v, nil
}

// eval evaluates expr with exactly the values it references.
func (mi *moduleInstance) eval(expr hcl.Expression, scope map[string]cty.Value) (cty.Value, error) {
	vars := map[string]cty.Value{}
	locals := map[string]cty.Value{}
	modules := map[string]cty.Value{}
	resources := map[string]map[string]cty.Value{} // type => name => value
	data := map[string]map[string]cty.Value{}
	var errs []error
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		if sv, ok := scope[root]; ok {
			vars[root] = sv
			continue
		}
		switch root {
		case "var":
			obj := map[string]cty.Value{}
			for k, v := range mi.vars {
				obj[k] = v
			}
			vars["var"] = cty.ObjectVal(obj)
		case "path":
			vars["path"] = cty.ObjectVal(map[string]cty.Value{
				"module": cty.StringVal(mi.mod.Dir), "root": cty.StringVal(mi.b.rootDir), "cwd": cty.StringVal(mi.b.rootDir),
			})
		case "terraform":
			vars["terraform"] = cty.ObjectVal(map[string]cty.Value{"workspace": cty.StringVal("default")})
		case "local", "module":
			name, ok := attrStep(tr, 1)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: invalid reference", tr.SourceRange()))
				continue
			}
			if root == "local" {
				v, err := mi.local(name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				locals[name] = v
			} else {
				v, err := mi.call(name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				modules[name] = v
			}
		case "data":
			typ, ok1 := attrStep(tr, 1)
			name, ok2 := attrStep(tr, 2)
			if !ok1 || !ok2 {
				errs = append(errs, fmt.Errorf("%s: invalid data reference", tr.SourceRange()))
				continue
			}
			v, err := mi.resource("data." + typ + "." + name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if data[typ] == nil {
				data[typ] = map[string]cty.Value{}
			}
			data[typ][name] = v
		case "count", "each", "self":
			errs = append(errs, fmt.Errorf("%s: %s is not available here", tr.SourceRange(), root))
		default:
			name, ok := attrStep(tr, 1)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: invalid reference to %s", tr.SourceRange(), root))
				continue
			}
			v, err := mi.resource(root + "." + name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if resources[root] == nil {
				resources[root] = map[string]cty.Value{}
			}
			resources[root][name] = v
		}
	}
	if len(errs) > 0 {
		return cty.NilVal, errors.Join(errs...)
	}
	if len(locals) > 0 {
		vars["local"] = cty.ObjectVal(locals)
	}
	if len(modules) > 0 {
		vars["module"] = cty.ObjectVal(modules)
	}
	if len(data) > 0 {
		d := map[string]cty.Value{}
		for typ, byName := range data {
			d[typ] = cty.ObjectVal(byName)
		}
		vars["data"] = cty.ObjectVal(d)
	}
	for typ, byName := range resources {
		vars[typ] = cty.ObjectVal(byName)
	}
	ctx := &hcl.EvalContext{Variables: vars, Functions: mi.b.funcs}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("%s: %w", mi.where(), diags)
	}
	return v, nil
}

func attrStep(tr hcl.Traversal, i int) (string, bool) {
	if len(tr) <= i {
		return "", false
	}
	a, ok := tr[i].(hcl.TraverseAttr)
	return a.Name, ok
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func dedupe(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if e == nil || seen[e.Error()] {
			continue
		}
		seen[e.Error()] = true
		out = append(out, e)
	}
	return out
}

// LoadVars reads a .tfvars file into input values.
func LoadVars(path string) (map[string]cty.Value, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		return nil, diags
	}
	out := map[string]cty.Value{}
	for name, a := range attrs {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, diags
		}
		out[name] = v
	}
	return out, nil
}
