// Command shape measures the shape of hato's Go code: the cyclomatic complexity and the length
// of every function, and the number of exported identifiers per package. It uses only the
// standard library (go/ast, go/parser), so `go run ./scripts/shape` needs nothing installed.
//
// Files measured: every .go file under the module root except _test.go files, *.pb.go files
// and files carrying a "Code generated ... DO NOT EDIT." header. Build tags are ignored: every
// file counts.
//
// # Complexity
//
// The definition is gocyclo's: 1, plus one for each if, for, range, non-default case clause,
// non-default select (comm) clause, && and ||. Function literals count toward the function
// that contains them. Lines run from the func keyword to the closing brace, both included.
//
// # Exported identifiers
//
// With -exported, a package's count is the number of exported top-level funcs, types, vars and
// consts, plus the exported methods of exported types (methods declared on the type and
// methods listed in an exported interface type) and the exported fields of exported struct
// types (embedded fields count under their type name).
//
// # Groups
//
// Each package belongs to one group by its directory: "test" (under test/), "examples" (under
// examples/), "scripts" (under scripts/), "internal" (any path with an internal/ element), and
// otherwise "library": the public packages (root package hato, actors, broker, envelope,
// supervisor). Totals are given per group; for exported identifiers also for the root package
// alone and for actors+broker.
//
// # Usage
//
//	go run ./scripts/shape                     # every function, most complex first
//	go run ./scripts/shape -over 15 -lines 60  # only functions over either limit
//	go run ./scripts/shape -exported           # exported identifiers per package
//	go run ./scripts/shape -over 15 -lines 60 -check  # exit 1 if a library function is over
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// generated matches the standard header of generated Go files.
var generated = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

// groups in the order the summaries print them.
var groups = []string{"library", "internal", "test", "examples", "scripts"}

type function struct {
	pkg, name, pos string
	group          string
	cx, lines      int
}

type pkgInfo struct {
	dir, group string
	exported   int
}

func main() {
	over := flag.Int("over", 0, "list only functions whose complexity is over `N` (0: no limit)")
	lines := flag.Int("lines", 0, "list only functions longer than `N` lines (0: no limit)")
	exported := flag.Bool("exported", false, "print the exported identifiers per package")
	check := flag.Bool("check", false, "exit 1 if a library function is over -over or -lines")
	flag.Parse()
	root := "."
	if flag.NArg() > 0 {
		root = flag.Arg(0)
	}
	funcs, pkgs, err := scan(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shape:", err)
		os.Exit(2)
	}
	bad := report(funcs, *over, *lines)
	if *exported {
		printExported(pkgs)
	}
	if *check && bad > 0 {
		os.Exit(1)
	}
}

// scan parses every measured file under root.
func scan(root string) ([]function, map[string]*pkgInfo, error) {
	var funcs []function
	pkgs := map[string]*pkgInfo{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !measured(path) {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if generated.Match(src) {
			return nil
		}
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		p := pkgs[rel]
		if p == nil {
			p = &pkgInfo{dir: rel, group: groupOf(rel)}
			pkgs[rel] = p
		}
		p.exported += countExported(f)
		funcs = append(funcs, functions(fset, f, rel, p.group)...)
		return nil
	})
	return funcs, pkgs, err
}

func measured(path string) bool {
	return strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") &&
		!strings.HasSuffix(path, ".pb.go")
}

func groupOf(dir string) string {
	first, _, _ := strings.Cut(dir, "/")
	switch {
	case first == "test" || first == "examples" || first == "scripts":
		return first
	case dir == "internal" || strings.HasPrefix(dir, "internal/") ||
		strings.Contains(dir, "/internal/") || strings.HasSuffix(dir, "/internal"):
		return "internal"
	}
	return "library"
}

// functions measures every func declaration of f.
func functions(fset *token.FileSet, f *ast.File, dir, group string) []function {
	var out []function
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
		out = append(out, function{
			pkg:   dir,
			name:  funcName(fd),
			pos:   fmt.Sprintf("%s:%d", filepath.ToSlash(start.Filename), start.Line),
			group: group,
			cx:    complexity(fd),
			lines: end.Line - start.Line + 1,
		})
	}
	return out
}

func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	return "(" + exprString(fd.Recv.List[0].Type) + ")." + fd.Name.Name
}

func exprString(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return "*" + exprString(t.X)
	case *ast.Ident:
		return t.Name
	case *ast.SelectorExpr:
		return t.Sel.Name
	case *ast.IndexExpr:
		return exprString(t.X)
	case *ast.IndexListExpr:
		return exprString(t.X)
	}
	return "?"
}

// complexity is gocyclo's cyclomatic complexity of fd.
func complexity(fd *ast.FuncDecl) int {
	n := 1
	ast.Inspect(fd, func(node ast.Node) bool {
		switch x := node.(type) {
		case *ast.IfStmt, *ast.ForStmt, *ast.RangeStmt:
			n++
		case *ast.CaseClause:
			if x.List != nil {
				n++
			}
		case *ast.CommClause:
			if x.Comm != nil {
				n++
			}
		case *ast.BinaryExpr:
			if x.Op == token.LAND || x.Op == token.LOR {
				n++
			}
		}
		return true
	})
	return n
}

// report prints the functions (all, or the offenders when a limit is set) and a summary per
// group; it returns the number of library offenders.
func report(funcs []function, over, lines int) int {
	sort.Slice(funcs, func(i, j int) bool {
		if funcs[i].cx != funcs[j].cx {
			return funcs[i].cx > funcs[j].cx
		}
		return funcs[i].lines > funcs[j].lines
	})
	lim := limits{over: over, lines: lines}
	fmt.Printf("%4s %5s  %-10s %-55s %s\n", "cx", "lines", "group", "function", "position")
	for _, f := range funcs {
		if lim.set() && !lim.offends(f) {
			continue
		}
		fmt.Printf("%4d %5d  %-10s %-55s %s\n", f.cx, f.lines, f.group, f.pkg+" "+f.name, f.pos)
	}
	fmt.Println()
	fmt.Printf("%-10s %6s %7s %8s %8s", "group", "funcs", "max cx", "max len", "mean cx")
	if lim.set() {
		fmt.Printf(" %9s %10s", fmt.Sprintf("cx>%d", over), fmt.Sprintf("lines>%d", lines))
	}
	fmt.Println()
	bad := 0
	for _, g := range groups {
		s := summarize(funcs, g, lim)
		if s.count == 0 {
			continue
		}
		if g == "library" {
			bad = s.offenders
		}
		fmt.Printf("%-10s %6d %7d %8d %8.2f", g, s.count, s.maxCx, s.maxLen, float64(s.sum)/float64(s.count))
		if lim.set() {
			fmt.Printf(" %9d %10d", s.cxOver, s.linesOver)
		}
		fmt.Println()
	}
	return bad
}

// limits are the -over and -lines thresholds; zero means no limit.
type limits struct{ over, lines int }

func (l limits) set() bool { return l.over > 0 || l.lines > 0 }

func (l limits) cxOver(f function) bool { return l.over > 0 && f.cx > l.over }

func (l limits) linesOver(f function) bool { return l.lines > 0 && f.lines > l.lines }

func (l limits) offends(f function) bool { return l.cxOver(f) || l.linesOver(f) }

type summary struct {
	count, maxCx, maxLen, sum, cxOver, linesOver, offenders int
}

// summarize totals the functions of one group.
func summarize(funcs []function, group string, lim limits) summary {
	var s summary
	for _, f := range funcs {
		if f.group != group {
			continue
		}
		s.count++
		s.sum += f.cx
		s.maxCx, s.maxLen = max(s.maxCx, f.cx), max(s.maxLen, f.lines)
		if lim.cxOver(f) {
			s.cxOver++
		}
		if lim.linesOver(f) {
			s.linesOver++
		}
		if lim.offends(f) {
			s.offenders++
		}
	}
	return s
}

// countExported counts the exported identifiers f declares (see the package doc).
func countExported(f *ast.File) int {
	n := 0
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() {
				continue
			}
			if d.Recv == nil || ast.IsExported(recvBase(d.Recv.List[0].Type)) {
				n++
			}
		case *ast.GenDecl:
			n += countSpecs(d)
		}
	}
	return n
}

func recvBase(e ast.Expr) string {
	return strings.TrimPrefix(exprString(e), "*")
}

func countSpecs(d *ast.GenDecl) int {
	n := 0
	for _, spec := range d.Specs {
		switch s := spec.(type) {
		case *ast.ValueSpec:
			for _, name := range s.Names {
				if name.IsExported() {
					n++
				}
			}
		case *ast.TypeSpec:
			if !s.Name.IsExported() {
				continue
			}
			n++
			n += exportedMembers(s.Type)
		}
	}
	return n
}

// exportedMembers counts the exported fields of a struct type or methods of an interface type.
func exportedMembers(t ast.Expr) int {
	var list *ast.FieldList
	switch x := t.(type) {
	case *ast.StructType:
		list = x.Fields
	case *ast.InterfaceType:
		list = x.Methods
	default:
		return 0
	}
	n := 0
	for _, field := range list.List {
		if len(field.Names) == 0 {
			if _, iface := t.(*ast.InterfaceType); iface {
				continue // an embedded interface or a type constraint, not a member
			}
			if ast.IsExported(recvBase(field.Type)) {
				n++
			}
			continue
		}
		for _, name := range field.Names {
			if name.IsExported() {
				n++
			}
		}
	}
	return n
}

func printExported(pkgs map[string]*pkgInfo) {
	dirs := make([]string, 0, len(pkgs))
	for d := range pkgs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	fmt.Println()
	fmt.Printf("%-30s %-10s %8s\n", "package", "group", "exported")
	totals := map[string]int{}
	for _, d := range dirs {
		p := pkgs[d]
		name := d
		if name == "." {
			name = ". (hato)"
		}
		fmt.Printf("%-30s %-10s %8d\n", name, p.group, p.exported)
		totals[p.group] += p.exported
	}
	fmt.Println()
	get := func(d string) int {
		if p := pkgs[d]; p != nil {
			return p.exported
		}
		return 0
	}
	fmt.Printf("%-30s %8d\n", "root package hato", get("."))
	fmt.Printf("%-30s %8d\n", "actors+broker", get("actors")+get("broker"))
	fmt.Printf("%-30s %8d\n", "all public (library)", totals["library"])
	for _, g := range groups[1:] {
		fmt.Printf("%-30s %8d\n", g+" (not public)", totals[g])
	}
}
