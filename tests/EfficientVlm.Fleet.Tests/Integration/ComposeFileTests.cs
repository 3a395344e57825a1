using EfficientVlm.Fleet.Tests.Infrastructure;
using YamlDotNet.RepresentationModel;

namespace EfficientVlm.Fleet.Tests.Integration;

/// <summary>
/// docker-compose.yml, the shipped topology: only the REST gateway (which checks API keys) is published; Azurite (a
/// well-known key) and the Orleans silo and gateway ports (no authentication) are reachable on an internal network only.
/// </summary>
public sealed class ComposeFileTests
{
    private static YamlMappingNode Root()
    {
        var yaml = new YamlStream();
        using var reader = new StreamReader(Path.Combine(TestPaths.RepositoryRoot, "docker-compose.yml"));
        yaml.Load(reader);
        return (YamlMappingNode)yaml.Documents[0].RootNode;
    }

    private static YamlMappingNode Map(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var child) ? (YamlMappingNode)child : new YamlMappingNode();

    private static IEnumerable<string> List(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var child) && child is YamlSequenceNode items
            ? items.Select(i => ((YamlScalarNode)i).Value!) : [];

    [Fact]
    public void Only_the_rest_gateway_is_published_and_the_cluster_network_is_internal()
    {
        var root = Root();
        var services = Map(root, "services").Children.ToDictionary(kv => ((YamlScalarNode)kv.Key).Value!, kv => (YamlMappingNode)kv.Value);
        Assert.Contains("azurite", services.Keys);

        var published = services.SelectMany(s => List(s.Value, "ports").Select(p => (Service: s.Key, Port: p))).ToList();
        Assert.Equal(new[] { ("silo-gateway", "8080:8080") }, published.Select(p => (p.Service, p.Port)).ToArray());
        Assert.All(services.Values, s => Assert.Empty(List(s, "expose")));
        Assert.All(services.Values, s => Assert.False(s.Children.ContainsKey(new YamlScalarNode("network_mode")), "host networking publishes every port"));

        var cluster = Map(Map(root, "networks"), "cluster");
        Assert.Equal("true", ((YamlScalarNode)cluster.Children[new YamlScalarNode("internal")]).Value);
        // storage and the GPU silos on the internal network alone; the gateway silo also on the one its port is published from
        Assert.Equal(new[] { "cluster" }, List(services["azurite"], "networks").ToArray());
        Assert.Equal(new[] { "cluster" }, List(services["silo-gpu"], "networks").ToArray());
        Assert.Equal(new[] { "cluster", "edge" }, List(services["silo-gateway"], "networks").Order().ToArray());
    }
}
