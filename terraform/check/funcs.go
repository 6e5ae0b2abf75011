package check

import (
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	ctyyaml "github.com/zclconf/go-cty-yaml"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// terraformFunctions maps Terraform function names to implementations with Terraform's semantics
// (most are the same cty functions Terraform itself uses). file() resolves relative paths against
// baseDir, the root module, as Terraform does when run from there.
func terraformFunctions(baseDir string) map[string]function.Function {
	return map[string]function.Function{
		"abs":        stdlib.AbsoluteFunc,
		"can":        tryfunc.CanFunc,
		"ceil":       stdlib.CeilFunc,
		"coalesce":   stdlib.CoalesceFunc,
		"compact":    stdlib.CompactFunc,
		"concat":     stdlib.ConcatFunc,
		"contains":   stdlib.ContainsFunc,
		"distinct":   stdlib.DistinctFunc,
		"element":    stdlib.ElementFunc,
		"file":       fileFunc(baseDir),
		"flatten":    stdlib.FlattenFunc,
		"floor":      stdlib.FloorFunc,
		"format":     stdlib.FormatFunc,
		"join":       stdlib.JoinFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"keys":       stdlib.KeysFunc,
		"length":     stdlib.LengthFunc,
		"lookup":     stdlib.LookupFunc,
		"lower":      stdlib.LowerFunc,
		"max":        stdlib.MaxFunc,
		"merge":      stdlib.MergeFunc,
		"min":        stdlib.MinFunc,
		"regex":      stdlib.RegexFunc,
		"regexall":   stdlib.RegexAllFunc,
		"replace":    replaceFunc,
		"sort":       stdlib.SortFunc,
		"split":      stdlib.SplitFunc,
		"sum":        sumFunc,
		"tobool":     stdlib.MakeToFunc(cty.Bool),
		"tolist":     stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"tomap":      stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"tonumber":   stdlib.MakeToFunc(cty.Number),
		"toset":      stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tostring":   stdlib.MakeToFunc(cty.String),
		"trimprefix": stdlib.TrimPrefixFunc,
		"trimsuffix": stdlib.TrimSuffixFunc,
		"try":        tryfunc.TryFunc,
		"upper":      stdlib.UpperFunc,
		"values":     stdlib.ValuesFunc,
		"yamldecode": ctyyaml.YAMLDecodeFunc,
		"zipmap":     stdlib.ZipmapFunc,
	}
}

func fileFunc(baseDir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if !filepath.IsAbs(p) {
				p = filepath.Join(baseDir, p)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return cty.NilVal, fmt.Errorf("no file exists at %s", args[0].AsString())
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

// sumFunc is Terraform's sum: the total of a non-empty list, set or tuple of numbers.
var sumFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.DynamicPseudoType}},
	Type:   function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		l := args[0]
		if l.IsNull() || !l.CanIterateElements() || l.Type().IsMapType() || l.Type().IsObjectType() {
			return cty.NilVal, function.NewArgErrorf(0, "sum needs a list, set or tuple of numbers")
		}
		if l.LengthInt() == 0 {
			return cty.NilVal, function.NewArgErrorf(0, "cannot sum an empty list")
		}
		total := new(big.Float)
		for it := l.ElementIterator(); it.Next(); {
			_, v := it.Element()
			if v.IsNull() || v.Type() != cty.Number {
				return cty.NilVal, function.NewArgErrorf(0, "sum needs numbers, got %s", v.Type().FriendlyName())
			}
			total.Add(total, v.AsBigFloat())
		}
		return cty.NumberVal(total), nil
	},
})

// replaceFunc is Terraform's replace: a substring wrapped in slashes is a regular expression.
var replaceFunc = function.New(&function.Spec{
	Params: []function.Parameter{
		{Name: "str", Type: cty.String}, {Name: "substr", Type: cty.String}, {Name: "replace", Type: cty.String},
	},
	Type: function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		sub := args[1].AsString()
		if len(sub) > 1 && strings.HasPrefix(sub, "/") && strings.HasSuffix(sub, "/") {
			return stdlib.RegexReplaceFunc.Call([]cty.Value{args[0], cty.StringVal(sub[1 : len(sub)-1]), args[2]})
		}
		return stdlib.ReplaceFunc.Call(args)
	},
})

// fakeProjectNumber stands in for data.google_project.*.number.
const fakeProjectNumber = "123456789012"

// withComputed adds the computed attributes the configuration reads, with the values the provider would
// report (ids built from the arguments) or stand-ins for values only GCP knows.
func withComputed(rb *ResourceBlock, attrs cty.Value, mi *moduleInstance) cty.Value {
	m := attrs.AsValueMap()
	if m == nil {
		m = map[string]cty.Value{}
	}
	s := func(name string) string {
		v, ok := m[name]
		if !ok || v.IsNull() || v.Type() != cty.String {
			return "UNSET_" + strings.ToUpper(name)
		}
		return v.AsString()
	}
	set := func(name, val string) {
		if _, ok := m[name]; !ok {
			m[name] = cty.StringVal(val)
		}
	}
	project := s("project")
	switch {
	case rb.Data && rb.Type == "google_project":
		set("number", fakeProjectNumber)
		set("name", s("project_id"))
		set("id", "projects/"+s("project_id"))
	case rb.Data:
	case rb.Type == "google_pubsub_topic":
		set("id", "projects/"+project+"/topics/"+s("name"))
	case rb.Type == "google_pubsub_subscription":
		set("id", "projects/"+project+"/subscriptions/"+s("name"))
	case rb.Type == "google_service_account":
		email := s("account_id") + "@" + project + ".iam.gserviceaccount.com"
		set("email", email)
		set("member", "serviceAccount:"+email)
		set("name", "projects/"+project+"/serviceAccounts/"+email)
		set("id", "projects/"+project+"/serviceAccounts/"+email)
	case rb.Type == "google_secret_manager_secret":
		set("id", "projects/"+project+"/secrets/"+s("secret_id"))
		set("name", "projects/"+fakeProjectNumber+"/secrets/"+s("secret_id"))
	case rb.Type == "google_secret_manager_secret_version":
		set("version", "1")
		set("name", s("secret")+"/versions/1")
		set("id", s("secret")+"/versions/1")
	case rb.Type == "google_sql_database_instance":
		set("connection_name", project+":"+s("region")+":"+s("name"))
		set("private_ip_address", "10.0.0.3")
		set("id", s("name"))
	case rb.Type == "google_sql_database":
		set("id", "projects/"+project+"/instances/"+s("instance")+"/databases/"+s("name"))
	case rb.Type == "google_compute_network":
		set("id", "projects/"+project+"/global/networks/"+s("name"))
		set("self_link", "https://www.googleapis.com/compute/v1/projects/"+project+"/global/networks/"+s("name"))
	case rb.Type == "google_compute_subnetwork":
		set("id", "projects/"+project+"/regions/"+s("region")+"/subnetworks/"+s("name"))
	case rb.Type == "google_compute_global_address":
		set("id", "projects/"+project+"/global/addresses/"+s("name"))
	case rb.Type == "google_cloud_run_v2_service":
		set("uri", "https://"+s("name")+"-abcdefghij-"+s("location")+".a.run.app")
		set("id", "projects/"+project+"/locations/"+s("location")+"/services/"+s("name"))
	}
	return cty.ObjectVal(m)
}
