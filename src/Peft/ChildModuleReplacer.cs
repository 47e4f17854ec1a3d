using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Swaps one child module for another inside its parent. A TorchSharp module reaches its children two ways: the
/// registry behind named_children/parameters/to() (filled by register_module) and the C# field its forward reads
/// (RegisterComponents registers each field under its component name). Replacing only one of them gives a module
/// whose forward and whose parameter list disagree, so both are replaced here.
/// </summary>
public static class ChildModuleReplacer
{
    public static void Replace(nn.Module parent, string childName, nn.Module replacement)
    {
        var current = parent.named_children().FirstOrDefault(c => c.name == childName).module
            ?? throw new InvalidOperationException(
                $"module {parent.GetType().Name} has no child '{childName}'; children: {string.Join(", ", parent.named_children().Select(c => c.name))}");

        if (parent is IList<nn.Module<Tensor, Tensor>> list && int.TryParse(childName, out int index))
        {
            // A ModuleList's forward-facing store is its list, not a field.
            if (replacement is not nn.Module<Tensor, Tensor> typed)
                throw new InvalidOperationException($"cannot put a {replacement.GetType().Name} into the ModuleList at '{childName}'");
            list[index] = typed;
        }
        else
        {
            var field = FieldHolding(parent, childName, current);
            if (field != null)
            {
                if (!field.FieldType.IsInstanceOfType(replacement))
                    throw new InvalidOperationException(
                        $"field {parent.GetType().Name}.{field.Name} is declared as {field.FieldType.Name}, which cannot hold a {replacement.GetType().Name}; declare it as nn.Module<Tensor, Tensor> so that LoRA can wrap it");
                field.SetValue(parent, replacement);
            }
        }

        parent.register_module(childName, null!);  // null unregisters; register_module refuses to overwrite a name
        parent.register_module(childName, replacement);
    }

    /// <summary>The instance field (of the parent's type or a base type) registered under <paramref name="childName"/>.</summary>
    private static FieldInfo? FieldHolding(nn.Module parent, string childName, nn.Module current)
    {
        const BindingFlags Instance = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance;
        for (var type = parent.GetType(); type != null && type != typeof(object); type = type.BaseType)
        {
            foreach (var field in type.GetFields(Instance | BindingFlags.DeclaredOnly))
            {
                if (field.ComponentName() == childName && ReferenceEquals(field.GetValue(parent), current))
                    return field;
            }
        }
        return null;
    }
}
