using System.Net;
using System.Net.Sockets;

namespace EfficientVlm.Harness.Processes;

public static class Ports
{
    private static readonly object Gate = new();
    private static readonly HashSet<int> Handed = [];

    /// <summary>A loopback TCP port that is free now and not handed out before in this process.</summary>
    public static int Free()
    {
        lock (Gate)
        {
            while (true)
            {
                using var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                int port = ((IPEndPoint)listener.LocalEndpoint).Port;
                listener.Stop();
                if (Handed.Add(port)) return port;
            }
        }
    }

    /// <summary>True when something accepts TCP connections on 127.0.0.1:<paramref name="port"/>.</summary>
    public static bool Answers(int port)
    {
        try
        {
            using var client = new TcpClient();
            return client.ConnectAsync(IPAddress.Loopback, port).Wait(TimeSpan.FromMilliseconds(500)) && client.Connected;
        }
        catch (AggregateException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
