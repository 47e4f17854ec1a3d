using System.Reflection;
using QLoraNet.Evaluation.Config;

namespace QLoraNet.Evaluation;

/// <summary>What <c>--tasks</c> resolved to: every task to run, the groups over them, and the names asked for.</summary>
public sealed record TaskSelection(IReadOnlyList<TaskConfig> Tasks, IReadOnlyList<GroupConfig> Groups,
    IReadOnlyDictionary<string, IReadOnlyList<string>> GroupMembers, IReadOnlyList<string> Requested)
{
    /// <summary>The groups a task belongs to, innermost first (mmlu_anatomy: mmlu_stem, mmlu).</summary>
    public IEnumerable<string> GroupsOf(string name)
    {
        foreach (var (group, members) in GroupMembers)
            if (members.Contains(name))
            {
                yield return group;
                foreach (var outer in GroupsOf(group)) yield return outer;
            }
    }
}

/// <summary>
/// The task files <c>--tasks</c> can name: the built-ins under src/Evaluation/Tasks (embedded in the assembly) and task
/// files given by path. A name is a task, a group (its members: tasks, tags or groups) or a tag.
/// </summary>
public sealed class TaskCatalog
{
    const string ResourcePrefix = "QLoraNet.Evaluation.Tasks.";
    readonly Dictionary<string, TaskConfig> tasks = new();
    readonly Dictionary<string, GroupConfig> groups = new();

    TaskCatalog() { }

    /// <summary>The built-in tasks and groups (read from the assembly's resources on each call: cheap, and no shared state).</summary>
    public static TaskCatalog BuiltIn()
    {
        var catalog = new TaskCatalog();
        var asm = typeof(TaskCatalog).Assembly;
        foreach (string res in asm.GetManifestResourceNames().Where(r => r.StartsWith(ResourcePrefix) && r.EndsWith(".yaml")).Order())
            catalog.Add(TaskFileReader.Read(FromResource(asm, res[ResourcePrefix.Length..])!));
        return catalog;
    }

    public IEnumerable<TaskConfig> Tasks => tasks.Values;
    public IEnumerable<GroupConfig> Groups => groups.Values;

    /// <summary>Names to show when one is unknown: groups and tasks, with MMLU's subjects folded into one entry.</summary>
    public string Listing() => string.Join(", ", groups.Keys.Where(g => !g.StartsWith("mmlu_")).Concat(tasks.Keys.Where(t => !t.StartsWith("mmlu_"))).Order()) + ", mmlu_<subject>";

    void Add(object config)
    {
        switch (config)
        {
            case TaskConfig t:
                if (tasks.TryGetValue(t.Name, out var other) && other.SourceFile != t.SourceFile)
                    throw new TaskException($"{t.SourceFile}: task '{t.Name}' is also defined in {other.SourceFile}");
                tasks[t.Name] = t;
                break;
            case GroupConfig g:
                groups[g.Name] = g;
                break;
        }
    }

    /// <summary>Resolves <c>--tasks</c> entries (names or YAML paths) to the tasks to run and the groups to report.</summary>
    public TaskSelection Resolve(IEnumerable<string> specs)
    {
        var requested = new List<string>();
        foreach (string spec in specs.Select(s => s.Trim()).Where(s => s.Length > 0))
        {
            if (spec.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || spec.EndsWith(".yml", StringComparison.OrdinalIgnoreCase) || File.Exists(spec))
            {
                var config = TaskFileReader.Read(TaskSourceFile.FromDisk(spec));
                // A group file's members may be task files beside it.
                if (config is GroupConfig)
                    foreach (string sibling in Directory.EnumerateFiles(Path.GetDirectoryName(Path.GetFullPath(spec))!, "*.yaml").Order())
                        if (Path.GetFullPath(sibling) != Path.GetFullPath(spec) && TryRead(sibling) is TaskConfig t) Add(t);
                Add(config);
                requested.Add(config is TaskConfig tc ? tc.Name : ((GroupConfig)config).Name);
            }
            else requested.Add(spec);
        }
        if (requested.Count == 0) throw new TaskException("--tasks names no task");

        var selected = new List<TaskConfig>();
        var usedGroups = new List<GroupConfig>();
        var members = new Dictionary<string, IReadOnlyList<string>>();
        foreach (string name in requested) Expand(name, selected, usedGroups, members, 0);
        return new TaskSelection(selected, usedGroups, members, requested);
    }

    /// <summary>Adds the task(s) a name stands for; returns the names of its direct entries (for group membership).</summary>
    IReadOnlyList<string> Expand(string name, List<TaskConfig> selected, List<GroupConfig> usedGroups,
        Dictionary<string, IReadOnlyList<string>> members, int depth)
    {
        if (depth > 8) throw new TaskException($"group '{name}' nests more than 8 deep (a cycle?)");
        if (tasks.TryGetValue(name, out var task))
        {
            if (!selected.Contains(task)) selected.Add(task);
            return [name];
        }
        if (groups.TryGetValue(name, out var group))
        {
            if (!members.ContainsKey(name))
            {
                var direct = new List<string>();
                foreach (string m in group.Members)
                {
                    var expanded = Expand(m, selected, usedGroups, members, depth + 1);
                    // A tag stands for its tasks; a task or group is one member.
                    direct.AddRange(tasks.ContainsKey(m) || groups.ContainsKey(m) ? [m] : expanded);
                }
                members[name] = direct;
                usedGroups.Add(group);
            }
            return [name];
        }
        var tagged = tasks.Values.Where(t => t.Tags?.Contains(name) == true).ToList();
        if (tagged.Count == 0)
            throw new TaskException($"unknown task '{name}'; built-in tasks and groups: {Listing()} (or give a task YAML file)");
        foreach (var t in tagged.Where(t => !selected.Contains(t))) selected.Add(t);
        return tagged.Select(t => t.Name).ToList();
    }

    static object? TryRead(string path)
    {
        try { return TaskFileReader.Read(TaskSourceFile.FromDisk(path)); }
        catch (TaskException) { return null; }
    }

    static TaskSourceFile? FromResource(Assembly asm, string relative)
    {
        using var stream = asm.GetManifestResourceStream(ResourcePrefix + relative);
        if (stream is null) return null;
        string text = new StreamReader(stream).ReadToEnd();
        string dir = relative.Contains('/') ? relative[..(relative.LastIndexOf('/') + 1)] : "";
        return new TaskSourceFile("builtin:" + relative, text, include => FromResource(asm, dir + include));
    }
}
